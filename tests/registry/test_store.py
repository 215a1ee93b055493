"""RegistryStore on SQLite and PostgreSQL: numbering, concurrency, aliases, resolving, archiving."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from dockyard.errors import Conflict, InvalidInput, NotFound
from dockyard.registry.records import ArtifactRef, Lineage, ModelVersion, Signature, TensorSpec
from dockyard.registry.refs import ModelRef
from dockyard.registry.store import RegistryStore

MakeVersion = Callable[..., ModelVersion]
THREADS = 8


def test_versions_are_numbered_from_one(store: RegistryStore, make_version: MakeVersion) -> None:
    numbers = [make_version().version for _ in range(3)]

    assert numbers == [1, 2, 3]
    assert [v.version for v in store.list_versions("fraud")] == [1, 2, 3]
    assert store.get_model("fraud").latest_version == 3


def test_each_model_has_its_own_numbers(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version("fraud")
    make_version("fraud")

    assert make_version("churn").version == 1
    assert [m.name for m in store.list_models()] == ["churn", "fraud"]
    assert [m.latest_version for m in store.list_models()] == [1, 2]


def test_concurrent_registrations_get_distinct_numbers(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    barrier = threading.Barrier(THREADS, timeout=30)

    def register(_: int) -> int:
        barrier.wait()
        return make_version("fraud").version

    with ThreadPoolExecutor(THREADS) as pool:
        numbers = list(pool.map(register, range(THREADS)))

    assert sorted(numbers) == list(range(1, THREADS + 1))
    assert [v.version for v in store.list_versions("fraud")] == list(range(1, THREADS + 1))


def test_timestamps_are_utc_and_round_trip(store: RegistryStore, make_version: MakeVersion) -> None:
    moment = datetime(2024, 5, 17, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    clocked = RegistryStore(store.engine, clock=lambda: moment)

    created = clocked.create_version(
        model="fraud",
        framework="sklearn",
        artifact=ArtifactRef("ab" * 32, "skops"),
        signature=Signature((), (), tabular=False),
        lineage=Lineage(None, None, {}, None, "3.11", {}),
    )
    stored = store.get_version("fraud", 1)
    model = store.get_model("fraud")

    for value in (created.created_at, stored.created_at, model.created_at):
        assert value == moment
        assert value is not None
        assert value.tzinfo is UTC
        assert value.hour == 12
    assert make_version().created_at is not None


def test_json_fields_round_trip(store: RegistryStore) -> None:
    signature = Signature(
        inputs=(
            TensorSpec("amount", "FP32", (-1,), allow_nan=True),
            TensorSpec("country", "BYTES", (-1,), categorical=True),
        ),
        outputs=(TensorSpec("probabilities", "FP64", (-1, 2)),),
        tabular=True,
    )
    lineage = Lineage(
        data_sha256="cd" * 32,
        data_rows=1000,
        data_schema={"amount": "float32", "country": "object"},
        git_commit="0123456789abcdef0123456789abcdef01234567-dirty",
        python_version="3.11.7",
        packages={"numpy": "2.0.0", "scikit-learn": "1.5.0"},
    )

    created = store.create_version(
        model="fraud",
        framework="onnx",
        artifact=ArtifactRef("ef" * 32, "onnx", {"providers": ["CPUExecutionProvider"]}),
        signature=signature,
        lineage=lineage,
        allow_pickle=True,
        trusted_types=("sklearn.pipeline.Pipeline",),
        metrics={"auc": 0.93, "rows": 1000},
        params={"depth": np.int64(4), "layers": [64, 32], "nested": {"a": None}},
        tags={"team": "risk"},
        description="first try",
        created_by="ana",
    )
    stored = store.get_version("fraud", 1)

    assert stored == created
    assert stored.signature == signature
    assert stored.lineage == lineage
    assert stored.metrics == {"auc": 0.93, "rows": 1000.0}
    assert stored.params == {"depth": 4, "layers": [64, 32], "nested": {"a": None}}
    assert stored.artifact.options == {"providers": ["CPUExecutionProvider"]}
    assert stored.trusted_types == ("sklearn.pipeline.Pipeline",)
    assert (stored.allow_pickle, stored.tags, stored.created_by) == (True, {"team": "risk"}, "ana")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "bad name"}, "invalid model name"),
        ({"metrics": {"auc": float("nan")}}, "metric 'auc' must be finite"),
        ({"metrics": {"auc": "high"}}, "metric 'auc' must be a number"),
        ({"params": {"model": object()}}, "params must be JSON"),
        ({"artifact": ArtifactRef("not-a-digest", "skops")}, "invalid artifact digest"),
        ({"tags": {"team": 3}}, "tags must map strings to strings"),
        ({"created_by": "x" * 300}, "created_by is 300 characters long; the limit is 256"),
    ],
    ids=["name", "nan-metric", "text-metric", "params", "digest", "tags", "created-by"],
)
def test_invalid_registrations_are_refused(
    store: RegistryStore, make_version: MakeVersion, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        make_version(**overrides)
    assert store.list_models() == []


def test_aliases_set_move_and_delete(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()
    make_version()

    first = store.set_alias("fraud", "production", 1)
    assert first.aliases == ("production",)
    assert store.get_model("fraud").aliases == {"production": 1}

    moved = store.set_alias("fraud", "production", 2)
    store.set_alias("fraud", "staging", 2)
    assert moved.version == 2
    assert store.get_version("fraud", 1).aliases == ()
    assert store.get_version("fraud", 2).aliases == ("production", "staging")
    assert store.get_model("fraud").aliases == {"production": 2, "staging": 2}
    assert store.resolve(ModelRef("fraud", alias="production")).version == 2

    store.delete_alias("fraud", "staging")
    assert store.get_model("fraud").aliases == {"production": 2}
    missing = "model 'fraud' has no alias 'staging'; its aliases: production"
    with pytest.raises(NotFound, match=missing):
        store.resolve(ModelRef("fraud", alias="staging"))
    with pytest.raises(NotFound, match="no alias 'staging'"):
        store.delete_alias("fraud", "staging")


def test_alias_names_are_validated(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()

    with pytest.raises(InvalidInput, match="invalid alias"):
        store.set_alias("fraud", "bad alias", 1)


def test_resolve_by_version(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()
    make_version()

    assert store.resolve(ModelRef("fraud", version=1)).version == 1


def test_bare_name_resolves_to_latest_live_version(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    for _ in range(3):
        make_version()
    assert store.resolve(ModelRef("fraud")).version == 3

    store.archive("fraud", 3)
    assert store.resolve(ModelRef("fraud")).version == 2


def test_bare_name_prefers_the_production_alias(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    for _ in range(3):
        make_version()
    store.set_alias("fraud", "staging", 2)
    assert store.resolve(ModelRef("fraud")).version == 3

    store.set_alias("fraud", "production", 1)
    resolved = store.resolve(ModelRef("fraud"))
    assert (resolved.version, resolved.aliases) == (1, ("production",))


def test_bare_name_with_everything_archived_is_not_found(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    make_version()
    store.archive("fraud", 1)

    with pytest.raises(NotFound, match="model 'fraud' has no version to serve"):
        store.resolve(ModelRef("fraud"))
    assert store.resolve(ModelRef("fraud", version=1)).archived


def test_archive_rules(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()
    make_version()
    store.set_alias("fraud", "production", 1)

    with pytest.raises(Conflict, match="cannot archive fraud:1: alias 'production' points at it"):
        store.archive("fraud", 1)

    archived = store.archive("fraud", 2)
    assert archived.archived
    assert store.archive("fraud", 2) == archived
    assert [v.archived for v in store.list_versions("fraud")] == [False, True]
    with pytest.raises(Conflict, match="cannot point alias 'production' at fraud:2"):
        store.set_alias("fraud", "production", 2)
    assert store.get_model("fraud").aliases == {"production": 1}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_model("ghost"),
        lambda s: s.list_versions("ghost"),
        lambda s: s.get_version("ghost", 1),
        lambda s: s.resolve(ModelRef("ghost")),
        lambda s: s.set_alias("ghost", "production", 1),
        lambda s: s.delete_alias("ghost", "production"),
        lambda s: s.archive("ghost", 1),
        lambda s: s.set_model_description("ghost", "x"),
        lambda s: s.set_model_tags("ghost", {}),
    ],
    ids=[
        "get_model",
        "list_versions",
        "get_version",
        "resolve",
        "set_alias",
        "delete_alias",
        "archive",
        "set_model_description",
        "set_model_tags",
    ],
)
def test_unknown_model_is_named(
    store: RegistryStore, call: Callable[[RegistryStore], object]
) -> None:
    with pytest.raises(NotFound, match="model 'ghost' is not registered"):
        call(store)


def test_unknown_version_is_named(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()
    make_version()

    with pytest.raises(NotFound, match="model 'fraud' has no version 7; its versions are 1 to 2"):
        store.get_version("fraud", 7)
    with pytest.raises(NotFound, match="has no version 7"):
        store.set_alias("fraud", "production", 7)
    with pytest.raises(NotFound, match="has no version 7"):
        store.resolve(ModelRef("fraud", version=7))


def test_unknown_alias_without_aliases(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()

    with pytest.raises(NotFound, match="model 'fraud' has no alias 'staging'; it has no aliases"):
        store.resolve(ModelRef("fraud", alias="staging"))


def test_model_description_and_tags(store: RegistryStore, make_version: MakeVersion) -> None:
    make_version()

    described = store.set_model_description("fraud", "card fraud scores")
    tagged = store.set_model_tags("fraud", {"team": "risk", "tier": "1"})
    retagged = store.set_model_tags("fraud", {"team": "payments"})

    assert described.description == "card fraud scores"
    assert tagged.tags == {"team": "risk", "tier": "1"}
    assert retagged.tags == {"team": "payments"}
    model = store.get_model("fraud")
    assert (model.description, model.tags, model.latest_version) == (
        "card fraud scores",
        {"team": "payments"},
        1,
    )
    with pytest.raises(InvalidInput, match="invalid tag key"):
        store.set_model_tags("fraud", {"": "x"})
