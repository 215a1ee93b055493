"""Dockyard: take a trained model to a safe, fast, monitored prediction service.

The public Python API is what ``__all__`` lists; everything else is internal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard import errors

if TYPE_CHECKING:
    from dockyard.client import Client
    from dockyard.registry.records import ModelVersion
    from dockyard.services.predict import LoadedModel

    __version__: str

__all__ = ["Client", "__version__", "errors", "load_model", "register_model"]


def __getattr__(name: str) -> Any:
    """``Client`` and ``__version__`` on first use (PEP 562): the client imports httpx and numpy,
    the version importlib.metadata, which ``import dockyard`` and the command line must not pay
    for."""
    if name == "Client":
        from dockyard.client import Client

        globals()["Client"] = Client
        return Client
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("dockyard")
        except PackageNotFoundError:  # running from a source tree that was never installed
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def register_model(
    model_or_path: Any,
    name: str,
    reference_data: Any,
    framework: str | None = None,
    metrics: dict[str, float] | None = None,
    description: str | None = None,
    allow_pickle: bool = False,
    *,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    alias: str | None = None,
    entrypoint: str | None = None,
    trusted_types: tuple[str, ...] = (),
    input_names: list[str] | None = None,
    home: str | Path | None = None,
) -> ModelVersion:
    """Register a model (in memory, or a path to a saved one) as a new version; return it.

    ``reference_data`` (a few hundred representative rows) gives the signature, the lineage
    fingerprint and the rows Dockyard predicts before it accepts the model.
    """
    if reference_data is None:
        raise errors.InvalidInput(
            "register_model() needs reference_data=: a few hundred rows like the training data "
            "(an array or DataFrame); they give the signature and the rows Dockyard predicts "
            "before it accepts the model"
        )
    from dockyard.config import load_settings
    from dockyard.services.register import Registration, register
    from dockyard.services.workspace import Workspace

    request = Registration(
        name=name,
        reference_data=reference_data,
        framework=framework,
        metrics=metrics or {},
        params=params or {},
        tags=tags or {},
        description=description or "",
        allow_pickle=allow_pickle,
        trusted_types=trusted_types,
        entrypoint=entrypoint,
        input_names=input_names,
        alias=alias,
    )
    with Workspace.open(load_settings({"home": home})) as workspace:
        return register(workspace, model_or_path, request)


def load_model(ref: str, home: str | Path | None = None) -> LoadedModel:
    """Load ``name``, ``name@alias`` or ``name:version`` for in-process prediction."""
    from dockyard.config import load_settings
    from dockyard.services.predict import load_model as load
    from dockyard.services.workspace import Workspace

    with Workspace.open(load_settings({"home": home})) as workspace:
        return load(workspace, ref)
