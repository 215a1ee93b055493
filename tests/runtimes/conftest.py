"""Tiny real training data and a save-then-load round trip shared by the runtime tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dockyard.runtimes.base import LoadOptions, Runtime, SavedModel

RoundTrip = Callable[..., tuple[SavedModel, Runtime]]


@pytest.fixture
def features() -> np.ndarray:
    """60 rows of 4 numeric features."""
    return np.random.default_rng(7).normal(size=(60, 4))


@pytest.fixture
def labels(features: np.ndarray) -> np.ndarray:
    """Binary labels that depend on the features."""
    return (features[:, 0] + 0.5 * features[:, 1] > 0).astype(np.int64)


@pytest.fixture
def frame(features: np.ndarray) -> pd.DataFrame:
    """Two numeric columns and a string category column."""
    colours = np.array(["red", "green", "blue"])[np.arange(len(features)) % 3]
    return pd.DataFrame({"size": features[:, 0], "weight": features[:, 1], "colour": colours})


@pytest.fixture
def roundtrip(tmp_path: Path) -> RoundTrip:
    """Save a model with a runtime module, check the options are JSON, and load it back."""
    counter = iter(range(1000))

    def run(
        module: ModuleType,
        model: Any,
        *,
        allow_pickle: bool = False,
        trusted_types: tuple[str, ...] = (),
        **save_kwargs: Any,
    ) -> tuple[SavedModel, Runtime]:
        folder = tmp_path / f"saved-{next(counter)}"
        folder.mkdir()
        saved = module.save(model, folder, **save_kwargs)
        assert saved.path.parent == folder
        assert [p.name for p in folder.iterdir()] == [saved.path.name]
        options = json.loads(json.dumps(saved.options))
        opts = LoadOptions(
            format=saved.format,
            options=options,
            allow_pickle=allow_pickle,
            trusted_types=trusted_types,
            cache_dir=tmp_path / "cache",
        )
        runtime: Runtime = module.load(saved.path, opts)
        assert runtime.framework == module.FRAMEWORK
        return saved, runtime

    return run
