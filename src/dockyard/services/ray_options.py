"""Ray Serve's name and options for one served model version, as plain values.

The ``ray`` backend deploys with them (``dockyard.scaling.ray_replica``) and ``dockyard export
ray`` writes them into a Ray Serve config file (``dockyard.services.exports``): one definition,
and no import of Ray, so the export runs where Ray is not installed.
"""

from __future__ import annotations

from typing import Any

from dockyard.config import Settings

DEPLOYMENT_PREFIX = "dockyard"


def application_name(model: str, version: int) -> str:
    """The Ray Serve application of one model version (one deployment, no HTTP route)."""
    return f"{DEPLOYMENT_PREFIX}-{model}-v{version}"


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
