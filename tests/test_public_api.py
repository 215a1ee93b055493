"""The public surface is exactly what ``dockyard.__all__`` lists."""

from __future__ import annotations

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
