"""Fallback versions: each served version whose model names a ``fallback`` gets it loaded at start.

A fallback answers a version's requests while that version's circuit is open (``breaker.py``). It is
resolved in the registry like any served reference (``3`` is a version, ``stable`` an alias of the
same model) and loaded once per model; a version the server serves anyway is not loaded twice. A
fallback that cannot be loaded is logged and the version's open circuit answers 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from dockyard.errors import DockyardError
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import parse_ref
from dockyard.services.workspace import Workspace
from dockyard.serving.deployments import Deployment

logger = logging.getLogger(__name__)
Load = Callable[[ModelVersion], Deployment]
"""Loads (and warms) a version for serving: ``gateway.load_deployment``."""


def attach_fallbacks(workspace: Workspace, deployments: Iterable[Deployment], load: Load) -> None:
    """Give each deployment whose model has a ``fallback`` setting its fallback deployment,
    loaded with ``load`` unless it is served already."""
    served = {(d.name, d.version.version): d for d in deployments}
    loaded: dict[tuple[str, int], Deployment] = {}
    owners: set[tuple[str, int]] = set()
    for deployment in served.values():
        wanted = workspace.settings.model_options(deployment.name).fallback
        if not wanted:
            continue
        try:
            fallback = _fallback(workspace, load, deployment.name, wanted, served, loaded)
        except Exception as exc:
            reason = exc.message if isinstance(exc, DockyardError) else repr(exc)
            logger.error(
                "%s: its fallback %r cannot be loaded (%s); while its circuit is open, requests "
                "get 503",
                deployment.version.ref,
                wanted,
                reason,
            )
            continue
        if fallback is deployment:
            logger.warning(
                "%s: its fallback %r is the same version; it has none",
                deployment.version.ref,
                wanted,
            )
            continue
        # A fallback loaded here starts and closes with the first version it serves.
        key = (fallback.name, fallback.version.version)
        owned = key not in served and key not in owners
        owners.add(key)
        deployment.attach_fallback(fallback, owned=owned)
        logger.info(
            "%s falls back on %s while its circuit is open",
            deployment.version.ref,
            fallback.version.ref,
        )


def _fallback(
    workspace: Workspace,
    load: Load,
    model: str,
    wanted: str,
    served: dict[tuple[str, int], Deployment],
    loaded: dict[tuple[str, int], Deployment],
) -> Deployment:
    """The deployment of ``model``'s ``wanted`` version or alias: one served or loaded already,
    else loaded now."""
    ref = parse_ref(f"{model}:{wanted}" if wanted.isdigit() else f"{model}@{wanted}")
    version = workspace.store.resolve(ref)
    key = (model, version.version)
    existing = served.get(key) or loaded.get(key)
    if existing is not None:
        return existing
    fallback = load(version)
    loaded[key] = fallback
    return fallback
