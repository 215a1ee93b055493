"""Settings precedence: flags > DOCKYARD_* environment > dockyard.toml > defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.config import load_settings
from dockyard.errors import InvalidInput


def test_precedence_and_sources(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[dockyard]\nport = 7000\nhost = "0.0.0.0"\nmax_batch_size = 8\n')
    env = {"DOCKYARD_PORT": "7100", "DOCKYARD_HOST": "127.0.0.2"}
    settings = load_settings({"port": 7200, "workers": None}, env=env, config_file=config)
    assert settings.port == 7200
    assert settings.host == "127.0.0.2"
    assert settings.max_batch_size == 8
    assert settings.workers == 0
    assert settings.effective_workers() >= 1
    assert settings.sources["port"] == "flag"
    assert settings.sources["host"] == "env DOCKYARD_HOST"
    assert settings.sources["max_batch_size"] == f"file {config}"
    assert settings.sources["workers"] == "default"


def test_secret_is_hidden_in_repr() -> None:
    url = "postgresql+psycopg://user:hunter2@db/dockyard"
    settings = load_settings(env={"DOCKYARD_DATABASE_URL": url})
    assert "hunter2" not in repr(settings)
    assert settings.shown_value("database_url") == "***"
    assert settings.effective_database_url() == url


def test_default_database_is_sqlite_in_home(tmp_path: Path) -> None:
    settings = load_settings({"home": tmp_path}, env={})
    assert settings.effective_database_url() == f"sqlite:///{tmp_path / 'dockyard.db'}"


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"port": "eighty"}, {}, "port"),
        ({}, {"DOCKYARD_WORKERS": "-1"}, "workers"),
        ({}, {"DOCKYARD_BATCHING": "maybe"}, "batching"),
        ({"nonsense": 1}, {}, "nonsense"),
        ({"port": 70000}, {}, "65535"),
        ({}, {"DOCKYARD_TRACE_SAMPLE": "1.5"}, "trace_sample must be between 0 and 1"),
        ({}, {"DOCKYARD_OTLP_ENDPOINT": "collector:4317"}, "otlp_endpoint must be an http"),
    ],
    ids=[
        "bad-int",
        "negative-workers",
        "bad-bool",
        "unknown",
        "port-range",
        "trace-sample",
        "otlp-endpoint",
    ],
)
def test_bad_values_name_the_setting(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_settings(flags, env=env)


def test_bad_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text("port = = 1\n")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_settings(env={}, config_file=config)
    config.write_text("colour = 'blue'\n")
    with pytest.raises(InvalidInput, match="unknown setting 'colour'"):
        load_settings(env={}, config_file=config)


def test_per_model_options_override_the_global_ones(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(
        "max_batch_size = 16\n[models.fraud]\nmax_batch_size = 8\nbatching = false\n"
        "[models.churn]\nmax_delay_ms = 2\n"
    )
    settings = load_settings(
        {"model_options": ["churn.max_batch_size=4", "fraud.batching=true"]},
        env={},
        config_file=config,
    )
    fraud = settings.model_options("fraud")
    assert (fraud.batching, fraud.max_batch_size) == (True, 8)
    churn = settings.model_options("churn")
    assert (churn.max_batch_size, churn.max_delay_ms, churn.batching) == (4, 2.0, True)
    other = settings.model_options("other")
    assert (other.max_batch_size, other.max_delay_ms) == (16, 0.0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"model_options": ["fraud.colour=red"]}, "not a per-model setting"),
        ({"model_options": ["fraud=1"]}, "MODEL.SETTING=VALUE"),
        ({"model_options": ["fraud.max_batch_size=0"]}, "model fraud"),
        ({"model_options": ["fraud.batching=perhaps"]}, "batching"),
    ],
    ids=["unknown-knob", "malformed", "zero-batch", "bad-bool"],
)
def test_bad_model_options_are_named(flags: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_settings(flags, env={})


def test_model_threads_split_the_cores_among_workers_leaving_each_loop_a_core() -> None:
    cores = len(os.sched_getaffinity(0))
    assert load_settings({"workers": 1}, env={}).effective_model_threads() == max(1, cores - 1)
    many = load_settings({"workers": 64}, env={})
    assert many.effective_model_threads() == 1
    assert load_settings({"model_threads": 3}, env={}).effective_model_threads() == 3
    from_omp = load_settings({"workers": 1}, env={"OMP_NUM_THREADS": "1"})
    assert from_omp.effective_model_threads() == 1
    assert from_omp.sources["model_threads"] == "env OMP_NUM_THREADS"
    ours_first = {"DOCKYARD_MODEL_THREADS": "2", "OMP_NUM_THREADS": "1"}
    assert load_settings(env=ours_first).effective_model_threads() == 2
    with pytest.raises(InvalidInput, match="model_threads"):
        load_settings({"model_threads": -1}, env={})


def test_allowed_hosts_are_a_list_from_env_flag_or_file(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('allowed_hosts = ["models.internal", "*.example.org"]\n')
    from_file = load_settings(env={}, config_file=config)
    assert from_file.allowed_hosts == ("models.internal", "*.example.org")
    from_env = load_settings(env={"DOCKYARD_ALLOWED_HOSTS": " a.internal, ,b.internal "})
    assert from_env.allowed_hosts == ("a.internal", "b.internal")
    assert from_env.shown_value("allowed_hosts") == "a.internal,b.internal"
    assert load_settings({"allowed_hosts": "*"}, env={}).allowed_hosts == ("*",)
    assert load_settings(env={}).allowed_hosts == ()


@pytest.mark.parametrize(
    "env",
    [
        {"DOCKYARD_MAX_HEADER_BYTES": "0"},
        {"DOCKYARD_MAX_HEADERS": "0"},
        {"DOCKYARD_HEADER_TIMEOUT_S": "0"},
        {"DOCKYARD_BODY_TIMEOUT_S": "-1"},
    ],
    ids=["header-bytes", "headers", "header-timeout", "body-timeout"],
)
def test_http_limits_must_be_positive(env: dict[str, str]) -> None:
    (name,) = env
    with pytest.raises(InvalidInput, match=name.removeprefix("DOCKYARD_").lower()):
        load_settings(env=env)
