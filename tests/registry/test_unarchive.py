"""RegistryStore.unarchive on SQLite and PostgreSQL: an archived version is live again; a live one
is left as it is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dockyard.errors import NotFound
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import ModelRef
from dockyard.registry.store import RegistryStore

MakeVersion = Callable[..., ModelVersion]


def test_unarchive_makes_a_version_live_again(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    make_version()
    make_version()
    store.archive("fraud", 2)
    assert store.resolve(ModelRef("fraud")).version == 1

    live = store.unarchive("fraud", 2)

    assert (live.version, live.archived) == (2, False)
    assert store.get_version("fraud", 2) == live
    assert store.resolve(ModelRef("fraud")).version == 2
    assert store.set_alias("fraud", "staging", 2).aliases == ("staging",)


def test_unarchiving_a_live_version_changes_nothing(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    make_version()
    store.set_alias("fraud", "production", 1)
    before = store.get_version("fraud", 1)

    assert store.unarchive("fraud", 1) == before
    assert store.list_versions("fraud") == [before]


def test_unarchive_names_what_is_unknown(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()

    with pytest.raises(NotFound, match="model 'ghost' is not registered"):
        store.unarchive("ghost", 1)
    with pytest.raises(NotFound, match="model 'fraud' has no version 3; its versions are 1 to 1"):
        store.unarchive("fraud", 3)
