"""A Ray Serve replica of one model version: the same verified load and runtime as a local worker.

Each replica opens the registry with the serving process's settings (on another machine those
name a shared PostgreSQL and S3 bucket: ``docs/scaling.md``), loads the version exactly as
``dockyard serve`` does (the artifact's SHA-256 checked, the safe formats only, signatures when
``require_signed`` is on) and predicts the batches the serving process's batcher sends it. Its
numeric libraries get as many threads as the CPUs Ray reserved for it.

``build`` makes the same application from plain arguments, for a Ray Serve config file
(``dockyard export ray``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dockyard.config import Settings, load_settings
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace

DEPLOYMENT_PREFIX = "dockyard"


def application_name(model: str, version: int) -> str:
    """The Ray Serve application of one model version (one deployment, no HTTP route)."""
    return f"{DEPLOYMENT_PREFIX}-{model}-v{version}"


class Replica:
    """One replica: the model version loaded once, predicting whole batches."""

    def __init__(self, settings: Settings, model: str, version: int) -> None:
        from threadpoolctl import threadpool_limits

        options = settings.model_options(model)
        threadpool_limits(limits=max(1, int(options.replica_cpus)))
        self._workspace = Workspace.open(settings)
        self._version = self._workspace.store.get_version(model, version)
        self._runtime = load_for_serving(self._workspace, self._version)

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Predict one batch (already checked against the signature by the serving process)."""
        return self._runtime.predict(x, tuple(outputs) or self._runtime.output_names)

    def check_health(self) -> None:
        """Ray Serve calls this periodically; a replica that loaded stays healthy."""


def deployment_options(settings: Settings, model: str) -> dict[str, Any]:
    """Ray Serve's options for ``model``'s replicas, from its knobs (``[models.NAME]``)."""
    options = settings.model_options(model)
    actor = {"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus}
    # Enough batches queued at each replica for the autoscaler to see the load above its target.
    ongoing = max(4, int(options.target_ongoing_requests * 4))
    scaling: dict[str, Any]
    if options.min_replicas == options.max_replicas:
        scaling = {"num_replicas": options.max_replicas}
    else:
        scaling = {
            "autoscaling_config": {
                "min_replicas": options.min_replicas,
                "initial_replicas": max(1, options.min_replicas),
                "max_replicas": options.max_replicas,
                "target_ongoing_requests": options.target_ongoing_requests,
                "upscale_delay_s": options.upscale_delay_s,
                "downscale_delay_s": options.downscale_delay_s,
            }
        }
    return {"ray_actor_options": actor, "max_ongoing_requests": ongoing, **scaling}


def application(settings: Settings, model: str, version: int) -> Any:
    """The bound Ray Serve application serving ``model`` version ``version``."""
    from ray import serve

    deployment = serve.deployment(name=model, **deployment_options(settings, model))(Replica)
    return deployment.bind(settings, model, version)


def build(args: Mapping[str, Any]) -> Any:
    """An application builder for a Ray Serve config file: ``args`` holds ``model``, ``version``
    and, optionally, ``settings`` (a table of Dockyard settings; the ``DOCKYARD_*`` environment
    of the cluster's nodes fills in the rest, such as the database URL)."""
    settings = load_settings(dict(args.get("settings", {})))
    return application(settings, str(args["model"]), int(args["version"]))
