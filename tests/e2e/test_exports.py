"""``dockyard export docker|k8s|ray``: the manifests pass the Kubernetes schemas (strict: an
unknown field fails), their probes are routes a real server answers without a key, the
Dockerfile's command serves the alias, the Ray Serve config passes Ray Serve's own schema and runs
on a real local Ray cluster behind ``dockyard serve --backend ray``, nothing secret is written,
and bad options get one line and the README's exit code."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import numpy as np
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.config import Settings, load_settings
from dockyard.services import exports
from dockyard.services.ray_options import deployment_options
from dockyard.services.register import Registration, register
from homes import open_unprotected
from ray_cluster import RayCluster
from servers import Server

pytestmark = pytest.mark.e2e


def _validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, latest_version(), strict=True)


def _manifests(capsys: pytest.CaptureFixture[str], home: Path, out: Path, *args: str) -> list[Any]:
    code, printed, err = run_cli(
        capsys, "export", "k8s", "lr", "--home", str(home), "--out", str(out), *args
    )
    assert code == 0, err
    (path,) = out.glob("*.yaml")
    assert f"wrote {path}" in printed
    assert "kubectl create secret generic dockyard-lr-secrets" in printed
    return list(yaml.safe_load_all(path.read_text()))


def test_k8s_manifests_pass_the_schemas_and_probe_real_routes(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], start_server: Any
) -> None:
    documents = _manifests(
        capsys, served, tmp_path / "k8s", "--min-replicas", "3", "--max-replicas", "6"
    )

    assert [d["kind"] for d in documents] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for document in documents:
        _validate(document)
    broken = copy.deepcopy(documents[0])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):  # the check is strict
        _validate(broken)

    deployment, service, autoscaler = documents
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == exports.serve_args(
        exports.Deployment(
            model="lr", alias="production", framework="sklearn", image="i", requirement="r"
        )
    )
    assert container["args"][:3] == ["dockyard", "serve", "lr@production"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 6)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert {ref["name"] for ref in secrets.values()} == {"dockyard-lr-secrets"}
    assert not secrets["DOCKYARD_DATABASE_URL"]["optional"]
    assert not secrets["DOCKYARD_API_KEY_SECRET"]["optional"]

    # The probes' paths answer 200 without a key on a real server that requires keys.
    server: Server = start_server(served, auth=True)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(f"{server.url}{path}").status_code == 200, probe
    text = (tmp_path / "k8s" / "dockyard-lr.yaml").read_text()
    assert server.admin_key not in text
    assert "dk_" not in text
    assert "sqlite" not in text


def test_the_dockerfile_serves_the_alias_from_the_shared_registry(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, printed, err = run_cli(
        capsys, "export", "docker", "lr", "--home", str(served), "--out", str(tmp_path)
    )
    assert code == 0, err
    lines = (tmp_path / "Dockerfile").read_text().splitlines()
    assert "FROM python:3.11-slim" in lines
    (requirement,) = [line for line in lines if line.startswith("ARG DOCKYARD_REQUIREMENT=")]
    assert requirement.startswith('ARG DOCKYARD_REQUIREMENT="dockyard[postgres,s3]==')
    (command,) = [json.loads(line[4:]) for line in lines if line.startswith("CMD ")]
    assert command[:3] == ["dockyard", "serve", "lr@production"]
    assert "USER 10001" in lines
    assert any(exports.READY in line for line in lines if "urlopen" in line)
    variables = (tmp_path / "docker.env").read_text()
    assert "DOCKYARD_DATABASE_URL=\n" in variables
    assert "DOCKYARD_API_KEY_SECRET=\n" in variables
    assert "docker build -t dockyard-lr:" in printed


def _ray_schema_round_trip(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as Ray Serve's own schema reads it (``serve deploy`` and ``serve run`` parse a
    config file with it), dumped back with only the fields it knows: a field it does not know is
    dropped there, so comparing the two is a strict check."""
    with warnings.catch_warnings():  # Ray's schema module uses pydantic's deprecated Field extras
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray.serve.schema import ServeDeploySchema
    parsed = ServeDeploySchema.model_validate(config)
    dumped: dict[str, Any] = parsed.model_dump(mode="json", exclude_unset=True)
    return dumped


def _ray_config(
    capsys: pytest.CaptureFixture[str], home: Path, out: Path, *args: str
) -> tuple[str, str]:
    """``dockyard export ray ARGS``: what it printed, and the file it wrote."""
    code, printed, err = run_cli(
        capsys, "export", "ray", *args, "--home", str(home), "--out", str(out)
    )
    assert code == 0, err
    path = out / "serve-config.yaml"
    assert f"wrote {path}" in printed
    return printed, path.read_text()


def test_the_ray_config_passes_ray_serves_schema_and_carries_the_models_knobs(
    served: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    # Version 2 is the newest and `staging`'s; `production` still names version 1.
    register(
        open_unprotected(served),
        logistic,
        Registration("lr", reference_data=tabular_data[0][:50], alias="staging"),
    )
    config_file = tmp_path / "dockyard.toml"
    config_file.write_text("[models.lr]\nmin_replicas = 1\nmax_replicas = 3\nreplica_cpus = 0.5\n")
    monkeypatch.setenv("DOCKYARD_CONFIG", str(config_file))
    monkeypatch.setenv("DOCKYARD_API_KEY_SECRET", "api-key-secret-4f1c9a")
    monkeypatch.setenv("DOCKYARD_ALERT_WEBHOOK_SECRET", "webhook-secret-7d2e0b")

    printed, text = _ray_config(
        capsys, served, tmp_path / "ray", "lr", "--model-option", "lr.upscale_delay_s=5"
    )

    config = yaml.safe_load(text)
    assert _ray_schema_round_trip(config) == config
    typo = copy.deepcopy(config)
    typo["applications"][0]["deployments"][0]["num_replica"] = 2
    assert _ray_schema_round_trip(typo) != typo  # the check is strict

    assert config["proxy_location"] == "Disabled"
    (application,) = config["applications"]
    assert application["name"] == "dockyard-lr-v1"
    assert application["route_prefix"] is None
    assert application["import_path"] == "dockyard.scaling.ray_replica:build"
    args = application["args"]
    assert (args["model"], args["version"]) == ("lr", 1)
    (deployment,) = application["deployments"]
    assert deployment["name"] == "lr"
    assert deployment["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert "num_replicas" not in deployment
    autoscaling = deployment["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (1, 3)
    assert autoscaling["upscale_delay_s"] == 5.0  # the flag, merged with the file's knobs
    # The settings table alone gives the builder the same knobs (as `build` reads it: as flags,
    # whatever the nodes' own environment and config file say), and the home of the registry.
    table = args["settings"]
    assert table["home"] == str(served.resolve())
    rebuilt = load_settings(table, env={})
    assert {"name": "lr", **deployment_options(rebuilt, "lr")} == deployment
    assert rebuilt.model_options("lr").replica_cpus == 0.5

    assert "Nothing secret is written here" in text
    for secret in ("api-key-secret-4f1c9a", "webhook-secret-7d2e0b", "database_url", "sqlite"):
        assert secret not in text
    assert "DOCKYARD_DATABASE_URL" in printed
    assert "serve deploy" in printed
    assert "dockyard serve lr@production --backend ray --ray-address" in printed

    monkeypatch.delenv("DOCKYARD_CONFIG")
    _, staging = _ray_config(capsys, served, tmp_path / "staging", "lr@staging")
    (application,) = yaml.safe_load(staging)["applications"]
    assert (application["name"], application["args"]["version"]) == ("dockyard-lr-v2", 2)
    assert application["deployments"][0]["num_replicas"] == 1  # the defaults: one replica


def test_the_ray_config_of_a_shared_registry_names_the_bucket_and_no_secret() -> None:
    settings = Settings(
        home=Path("/srv/dockyard"),
        database_url="postgresql+psycopg://dockyard:hunter2@db.internal/registry",
        api_key_secret="api-key-secret-4f1c9a",
        encryption_key="ZW5jcnlwdGlvbi1rZXktb2YtMzItYnl0ZXMtLS0tLS0=",
        artifact_url="s3://models/prod",
        s3_endpoint_url="https://minio.internal:9000",
        require_signed=True,
    )
    deployment = exports.Deployment(
        model="fraud",
        alias="production",
        framework="sklearn",
        image="i",
        requirement="r",
        version=7,
    )
    config = exports.ray_config(deployment, settings)
    text = exports.ray_header(deployment, config, "serve-config.yaml") + yaml.safe_dump(config)

    assert _ray_schema_round_trip(config) == config
    table = config["applications"][0]["args"]["settings"]
    assert table["artifact_url"] == "s3://models/prod"
    assert table["s3_endpoint_url"] == "https://minio.internal:9000"
    assert table["require_signed"] is True
    assert "home" not in table  # the nodes use homes of their own: the registry is shared
    for secret in ("hunter2", "db.internal", "api-key-secret-4f1c9a", settings.encryption_key):
        assert secret not in text


STATUS_SCRIPT = """
import json, sys, time
import ray
from ray import serve

address, name, wait_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
ray.init(address=address, log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + wait_s
while True:
    app = serve.status().applications.get(name)
    state = "" if app is None else str(app.status.value)
    if state in ("RUNNING", "DEPLOY_FAILED") or time.monotonic() > deadline:
        break
    time.sleep(0.3)
reserved = 0.0
while state == "RUNNING" and not reserved and time.monotonic() < deadline + 10:
    reserved = ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0.0)
    time.sleep(0.2)
print(json.dumps({"state": state, "message": app.message if app else "", "cpus": reserved}))
"""


def _ray_application(cluster: RayCluster, name: str, wait_s: float) -> dict[str, Any]:
    """The state of Ray Serve application ``name`` on ``cluster`` once it runs, failed, or
    ``wait_s`` passed, and the CPUs its replicas hold, from a driver process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", STATUS_SCRIPT, cluster.address, name, str(wait_s)],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=wait_s + 90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(300)
def test_the_ray_config_deploys_to_a_ray_cluster_and_the_ray_front_adopts_it(
    served: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    start_server: Any,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    _ray_config(capsys, served, tmp_path, "lr", "--model-option", "lr.replica_cpus=0.5")
    cluster = RayCluster(cpus=2)
    try:
        # Deployed as an operator would, by Ray's own CLI reading the file (`serve run` submits
        # it to the Serve controller as `serve deploy` does, without needing the dashboard).
        deployed = subprocess.run(
            [
                str(Path(sys.executable).with_name("serve")),
                "run",
                "serve-config.yaml",
                "--address",
                cluster.address,
                "--non-blocking",
            ],
            cwd=tmp_path,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Submitted deploy config successfully" in deployed.stdout + deployed.stderr, (
            deployed.stdout + deployed.stderr
        )[-3000:]
        status = _ray_application(cluster, "dockyard-lr-v1", 120)
        assert status["state"] == "RUNNING", status
        assert status["cpus"] == 0.5  # one replica, sized by the model's knob

        # The server in front joins the cluster with its variables (loopback, the token).
        for name, value in cluster.env.items():
            if os.environ.get(name) != value:
                monkeypatch.setenv(name, value)
        server: Server = start_server(
            served, "lr", "--backend", "ray", "--ray-address", cluster.address
        )
        rows = tabular_data[0][:5]
        answer = httpx.post(
            f"{server.url}/v2/models/lr/infer",
            json={
                "inputs": [
                    {"name": "input-0", "shape": [5, 30], "datatype": "FP64", "data": rows.tolist()}
                ]
            },
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "1"
        outputs = {output["name"]: output["data"] for output in body["outputs"]}
        assert outputs["predict"] == logistic.predict(rows).tolist()
        server.stop()
        log = server.output()
        assert "using the Ray application dockyard-lr-v1 already running" in log, log
        assert "on Ray as dockyard-lr-v1" not in log, log  # it did not deploy one

        # The server did not delete what it did not deploy.
        status = _ray_application(cluster, "dockyard-lr-v1", 0)
        assert (status["state"], status["cpus"]) == ("RUNNING", 0.5), status
    finally:
        cluster.stop()


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (["k8s", "lr:1"], 2, "by an alias"),
        (["k8s", "lr", "--cpu", "lots"], 2, "--cpu 'lots'"),
        (["k8s", "lr", "--min-replicas", "4", "--max-replicas", "2"], 2, "--max-replicas 2"),
        (["docker", "lr", "--image", "Bad Image"], 2, "--image 'Bad Image'"),
        (["docker", "nosuch"], 4, "nosuch"),
        (["ray", "lr:1"], 2, "by an alias"),
        (["ray", "nosuch"], 4, "nosuch"),
        (["ray", "lr", "--model-option", "lr.replica_cpus=-1"], 2, "replica_cpus"),
    ],
)
def test_bad_options_get_one_line_and_their_exit_code(
    served: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    names: str,
) -> None:
    kind, *rest = args
    exit_code, _, err = run_cli(
        capsys, "export", kind, *rest, "--home", str(served), "--out", str(tmp_path / "out")
    )
    assert exit_code == code, err
    assert err.count("\n") == 1, err
    assert names in err, err
    assert not (tmp_path / "out").exists()
