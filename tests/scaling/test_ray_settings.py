"""The ray backend's settings, Ray Serve options and refusals, without Ray: validation of
``backend``, ``ray_address`` and the replica knobs; which addresses count as this machine's;
the deployment options of fixed and autoscaled models; a failed deployment's reason in one line;
``serve --workers 2`` refused with the ray backend, through the installed command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dockyard.config import load_settings
from dockyard.errors import InvalidInput
from dockyard.registry.records import ArtifactRef, Lineage, ModelVersion, Signature, TensorSpec
from dockyard.scaling.ray_cluster import is_local_address
from dockyard.scaling.ray_runtime import _deploy_failure
from dockyard.services.ray_options import deployment_options
from servers import dockyard_command


def test_the_ray_settings_default_to_the_local_backend_and_one_replica() -> None:
    settings = load_settings(env={})
    assert settings.backend == "local"
    assert settings.ray_address == ""
    options = settings.model_options("any")
    assert (options.min_replicas, options.max_replicas) == (1, 1)
    assert options.target_ongoing_requests == 2.0
    assert (options.replica_cpus, options.replica_gpus) == (1.0, 0.0)


@pytest.mark.parametrize(
    "address",
    ["", "auto", "127.0.0.1:6379", "head.internal:6379", "[::1]:6379", "ray://10.0.0.5:10001"],
)
def test_ray_address_takes_its_documented_forms(address: str) -> None:
    settings = load_settings({"backend": "ray", "ray_address": address}, env={})
    assert settings.ray_address == address


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"backend": "kubernetes"}, {}, "backend must be local or ray, got 'kubernetes'"),
        ({}, {"DOCKYARD_BACKEND": "Ray"}, "backend must be local or ray"),
        ({"ray_address": "10.0.0.5"}, {}, "ray_address must be HOST:PORT"),
        ({"ray_address": ":6379"}, {}, "ray_address must be HOST:PORT"),
        ({"ray_address": "head:port"}, {}, "ray_address must be HOST:PORT"),
        ({"ray_address": "head:70000"}, {}, "ray_address must be HOST:PORT"),
        ({"min_replicas": -1}, {}, "min_replicas and max_replicas must satisfy"),
        ({"max_replicas": 0}, {}, "got 1 and 0"),
        ({"min_replicas": 3, "max_replicas": 2}, {}, "got 3 and 2"),
        ({"target_ongoing_requests": 0}, {}, "target_ongoing_requests must be more than 0"),
        ({"replica_cpus": -0.5}, {}, "replica_cpus must be 0 or more"),
        (
            {"model_options": ["fraud.min_replicas=3", "fraud.max_replicas=2"]},
            {},
            "models.fraud.min_replicas and models.fraud.max_replicas",
        ),
        (
            {"model_options": ["fraud.target_ongoing_requests=-1"]},
            {},
            "models.fraud.target_ongoing_requests must be more than 0",
        ),
        ({"model_options": ["fraud.upscale_delay_s=-1"]}, {}, "models.fraud.upscale_delay_s"),
    ],
    ids=[
        "unknown-backend",
        "backend-case",
        "address-no-port",
        "address-no-host",
        "address-bad-port",
        "address-port-range",
        "negative-min",
        "zero-max",
        "min-above-max",
        "zero-target",
        "negative-cpus",
        "model-min-above-max",
        "model-negative-target",
        "model-negative-delay",
    ],
)
def test_bad_ray_settings_name_the_setting(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_settings(flags, env=env)


def test_a_model_may_scale_to_zero_replicas_and_back() -> None:
    settings = load_settings({"model_options": ["idle.min_replicas=0"]}, env={})
    assert settings.model_options("idle").min_replicas == 0


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("", True),
        ("auto", True),
        ("127.0.0.1:6379", True),
        ("127.0.0.2:6379", True),
        ("localhost:6379", True),
        ("[::1]:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("ray://localhost:10001", True),
        ("10.0.0.5:6379", False),
        ("192.0.2.2:6379", False),
        ("head.internal:6379", False),
        ("ray://10.0.0.5:10001", False),
        ("[2001:db8::1]:6379", False),
    ],
)
def test_only_loopback_addresses_are_this_machines_cluster(address: str, local: bool) -> None:
    assert is_local_address(address) is local


def _options(*model_options: str) -> dict[str, Any]:
    settings = load_settings({"model_options": list(model_options)}, env={})
    return deployment_options(settings, "m")


def test_equal_min_and_max_replicas_are_a_fixed_number_of_replicas() -> None:
    options = _options("m.min_replicas=3", "m.max_replicas=3", "m.replica_cpus=0.5")
    assert options["num_replicas"] == 3
    assert "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert _options()["num_replicas"] == 1  # the default: one replica


def test_a_range_of_replicas_is_autoscaled_on_the_ongoing_requests() -> None:
    options = _options(
        "m.min_replicas=1",
        "m.max_replicas=4",
        "m.target_ongoing_requests=1.5",
        "m.upscale_delay_s=0",
        "m.downscale_delay_s=60",
        "m.replica_gpus=1",
    )
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 1.5,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 60.0,
    }
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    # A replica holds more batches than the target, or the autoscaler could never see it above.
    assert options["max_ongoing_requests"] > 1.5


def test_a_model_that_may_scale_to_zero_still_starts_with_one_replica() -> None:
    scaling = _options("m.min_replicas=0", "m.max_replicas=2")["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["initial_replicas"]) == (0, 1)


RAY_FAILURE = (
    "The deployment failed to start 3 times in a row. This may be due to a problem with its "
    "constructor or initial health check failing. See controller logs for details. Error:\n"
    "\x1b[36mray::ServeReplica:dockyard-broken-v1:broken.initialize_and_get_metadata()\x1b[39m "
    "(pid=26123, ip=127.0.0.1)\n"
    '  File "ray/serve/_private/replica.py", line 1928, in initialize\n'
    "    raise RuntimeError(traceback.format_exc()) from None\n"
    "RuntimeError: Traceback (most recent call last):\n"
    '  File "dockyard/registry/artifacts.py", line 144, in verified_path\n'
    "    raise ArtifactCorrupt(str(path), digest, actual)\n"
    "dockyard.errors.ArtifactCorrupt: artifact /srv/home/artifacts/fb/fbd7 is corrupt: "
    "expected sha256 fbd7, found 1063\n"
)
"""What Ray Serve 2.60 reports of a deployment whose replicas raise in their constructor (the
message of its deployment; the application's own says only which deployments failed)."""


BROKEN = ModelVersion(
    "broken",
    1,
    "sklearn",
    ArtifactRef("fbd7", "skops"),
    Signature((TensorSpec("x0", "FP64", (-1,)),), (TensorSpec("predict", "INT64", (-1,)),), True),
    Lineage(None, None, {}, None, "3.11", {}),
)


def test_a_failed_deployment_is_named_by_the_replicas_own_error() -> None:
    app = "Failed to update the deployments ['broken']."
    error = _deploy_failure(BROKEN, f"{app}\n{RAY_FAILURE}")
    assert str(error) == (
        "cannot deploy broken:1 on Ray: dockyard.errors.ArtifactCorrupt: artifact "
        "/srv/home/artifacts/fb/fbd7 is corrupt: expected sha256 fbd7, found 1063"
    )
    assert str(_deploy_failure(BROKEN, app)).endswith(": its replicas failed")


def test_serve_refuses_more_than_one_worker_with_the_ray_backend(tmp_path: Path) -> None:
    """Through the installed command (a subprocess: ``serve`` imports Ray first, whose import
    warnings this test process would turn into errors); it stops before any Ray starts."""
    done = subprocess.run(
        [*dockyard_command(), "serve", "--backend", "ray", "--workers", "2", "--port", "0"],
        env={**os.environ, "DOCKYARD_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "the ray backend serves from one process (--workers 2 asked for more)" in done.stderr
    assert "Traceback" not in done.stderr
    assert "joined Ray" not in done.stderr
