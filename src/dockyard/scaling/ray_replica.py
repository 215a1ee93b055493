"""A Ray Serve replica of one model version: the same verified load and runtime as a local worker.

Each replica opens the registry with the serving process's settings (on another machine those
name a shared PostgreSQL and S3 bucket: ``docs/scaling.md``), loads the version exactly as
``dockyard serve`` does (the artifact's SHA-256 checked, the safe formats only, signatures when
``require_signed`` is on) and predicts the batches the serving process's batcher sends it. Its
numeric libraries get as many threads as the CPUs Ray reserved for it.

``build`` makes the same application from plain arguments, for a Ray Serve config file
(``dockyard export ray``). The application's name and Ray options come from
``dockyard.services.ray_options``, which that export writes too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dockyard.config import Settings, load_settings
from dockyard.services.ray_options import DEPLOYMENT_PREFIX as DEPLOYMENT_PREFIX
from dockyard.services.ray_options import application_name as application_name
from dockyard.services.ray_options import deployment_options
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace


class Replica:
    """One replica: the model version loaded once, predicting whole batches."""

    def __init__(self, settings: Settings, model: str, version: int) -> None:
        from threadpoolctl import threadpool_limits

        options = settings.model_options(model)
        threadpool_limits(limits=max(1, int(options.replica_cpus)))
        with Workspace.open(settings) as workspace:  # the loaded runtime needs no registry
            self._version = workspace.store.get_version(model, version)
            self._runtime = load_for_serving(workspace, self._version)

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Predict one batch (already checked against the signature by the serving process)."""
        return self._runtime.predict(x, tuple(outputs) or self._runtime.output_names)

    def check_health(self) -> None:
        """Ray Serve calls this periodically; a replica that loaded stays healthy."""


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
