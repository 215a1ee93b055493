"""The public surface is exactly what ``dockyard.__all__`` lists."""

from __future__ import annotations

from pathlib import Path

import pytest

import dockyard


def test_exported_members() -> None:
    assert sorted(dockyard.__all__) == sorted(
        ["Client", "__version__", "errors", "load_model", "register_model"]
    )
    for name in dockyard.__all__:
        assert hasattr(dockyard, name), name


def test_every_error_maps_to_a_status_and_exit_code() -> None:
    for name in dockyard.errors.__all__:
        cls = getattr(dockyard.errors, name)
        assert issubclass(cls, dockyard.errors.DockyardError)
        assert 400 <= cls.http_status <= 599
        assert cls.exit_code >= 1


def test_register_model_asks_for_reference_data_in_python_terms(tmp_path: Path) -> None:
    """The reference is required; the error names the argument, not the CLI's option."""
    with pytest.raises(
        dockyard.errors.InvalidInput, match=r"^register_model\(\) needs reference_data="
    ):
        dockyard.register_model(object(), "m", None, home=tmp_path)
    with pytest.raises(TypeError, match="reference_data"):
        dockyard.register_model(object(), "m", home=tmp_path)  # type: ignore[call-arg]
    assert not (tmp_path / "dockyard.db").exists()  # refused before the registry is opened
