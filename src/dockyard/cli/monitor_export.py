"""``dockyard monitor export grafana --out DIR``: a Grafana dashboard and Prometheus alerting rules
over the metric names ``/metrics`` shows, so a team that runs Prometheus and Grafana has them at
once. A test checks that every metric they name is in a real server's ``/metrics``.

The rules' thresholds are constants here; the files are meant to be edited to taste.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dockyard.errors import DockyardError

app = typer.Typer(help="Dashboards and alert rules for other monitoring systems.")

DASHBOARD_FILE = "dockyard-dashboard.json"
RULES_FILE = "dockyard-alerts.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MODELS = 'model=~"$model"'
RATE = "[$__rate_interval]"
ERROR_RATE = 0.05
"""Share of a model's requests answered 5xx, over 5 minutes, that fires an alert."""
P99_SECONDS = 0.5
ACCURACY_DROP = 0.05
"""How far a live accuracy, precision, recall, F1 or AUC may fall below its value recorded at
registration."""
ERROR_RISE = 1.2
"""How many times its value recorded at registration a live MAE or RMSE may reach."""
HIGHER_IS_BETTER = "accuracy|precision|recall|f1|auc"
LOWER_IS_BETTER = "mae|rmse"
SECURITY_EVENTS = 20
"""Security events of one kind in 5 minutes that fire an alert."""


def _selected(metric: str, *matchers: str) -> str:
    """``metric{matchers}``, the empty ones left out."""
    shown = ",".join(matcher for matcher in matchers if matcher)
    return f"{metric}{{{shown}}}" if shown else metric


def _share_5xx(models: str, window: str) -> str:
    """The share of each model's requests answered with a 5xx."""
    failed = _selected("dockyard_requests_total", models, 'status=~"5.."')
    every = _selected("dockyard_requests_total", models)
    return f"sum by (model) (rate({failed}{window})) / sum by (model) (rate({every}{window}))"


def _quantile(q: float, histogram: str, models: str, window: str) -> str:
    buckets = _selected(f"{histogram}_bucket", models)
    return f"histogram_quantile({q:g}, sum by (model, le) (rate({buckets}{window})))"


PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Requests per second",
        "reqps",
        [
            (
                f"sum by (model, status) (rate(dockyard_requests_total{{{MODELS}}}{RATE}))",
                "{{model}} {{status}}",
            )
        ],
    ),
    (
        "Error rate (5xx share)",
        "percentunit",
        [(_share_5xx(MODELS, RATE), "{{model}}")],
    ),
    (
        "Errors by kind",
        "reqps",
        [
            (
                f"sum by (model, kind) (rate(dockyard_errors_total{{{MODELS}}}{RATE}))",
                "{{model}} {{kind}}",
            )
        ],
    ),
    (
        "Latency p50 / p99",
        "s",
        [
            (_quantile(0.5, "dockyard_request_duration_seconds", MODELS, RATE), "{{model}} p50"),
            (_quantile(0.99, "dockyard_request_duration_seconds", MODELS, RATE), "{{model}} p99"),
        ],
    ),
    (
        "Batch size (rows)",
        "short",
        [
            (
                f"sum by (model) (rate(dockyard_batch_rows_sum{{{MODELS}}}{RATE})) / "
                f"sum by (model) (rate(dockyard_batch_rows_count{{{MODELS}}}{RATE}))",
                "{{model}} mean",
            ),
            (_quantile(0.99, "dockyard_batch_rows", MODELS, RATE), "{{model}} p99"),
        ],
    ),
    (
        "Queue depth and rows in flight",
        "short",
        [
            (f"sum by (model) (dockyard_queue_depth{{{MODELS}}})", "{{model}} queued"),
            (f"sum by (model) (dockyard_in_flight_rows{{{MODELS}}})", "{{model}} in flight"),
        ],
    ),
    (
        "Drift score per feature",
        "short",
        [
            (
                f"max by (model, feature) (dockyard_drift_score{{{MODELS}}})",
                "{{model}} {{feature}}",
            ),
            (
                f"max by (model, feature) (dockyard_drift_detected{{{MODELS}}})",
                "{{model}} {{feature}} drifted",
            ),
        ],
    ),
    (
        "Live accuracy and error metrics",
        "short",
        [
            (f"dockyard_live_metric{{{MODELS}}}", "{{model}}:{{version}} {{metric}}"),
            (
                f"dockyard_registered_metric{{{MODELS}}}",
                "{{model}}:{{version}} {{metric}} at registration",
            ),
        ],
    ),
    (
        "Artifact age",
        "s",
        [(f"dockyard_artifact_age_seconds{{{MODELS}}}", "{{model}}:{{version}}")],
    ),
    (
        "Model load time",
        "s",
        [(f"dockyard_model_load_seconds{{{MODELS}}}", "{{model}}:{{version}}")],
    ),
    (
        "Security events per second",
        "short",
        [("sum by (kind) (rate(dockyard_security_events_total" + RATE + "))", "{{kind}}")],
    ),
    (
        "Prediction log rows per second, and rows waiting",
        "short",
        [
            (
                "sum by (outcome) (rate(dockyard_prediction_log_rows_total" + RATE + "))",
                "{{outcome}}",
            ),
            ("sum(dockyard_prediction_log_pending_rows)", "waiting"),
        ],
    ),
]
"""Title, unit and (PromQL, legend) of each panel, two to a row."""

RULES: list[tuple[str, str, str, str]] = [
    (
        "DockyardHighErrorRate",
        f"{_share_5xx('', '[5m]')} > {ERROR_RATE:g}",
        "5m",
        f"{{{{ $labels.model }}}}: over {ERROR_RATE:.0%} of requests fail with a 5xx",
    ),
    (
        "DockyardHighLatencyP99",
        f"{_quantile(0.99, 'dockyard_request_duration_seconds', '', '[5m]')} > {P99_SECONDS:g}",
        "5m",
        f"{{{{ $labels.model }}}}: p99 latency above {P99_SECONDS:g} s",
    ),
    (
        "DockyardFeatureDrift",
        "max by (model, version, feature) (dockyard_drift_detected) == 1",
        "5m",
        "{{ $labels.model }}:{{ $labels.version }}: feature {{ $labels.feature }} has drifted",
    ),
    (
        "DockyardAccuracyDrop",
        f'dockyard_live_metric{{metric=~"{HIGHER_IS_BETTER}"}} < on (model, version, metric) '
        f"group_left () (dockyard_registered_metric - {ACCURACY_DROP:g})",
        "15m",
        "{{ $labels.model }}:{{ $labels.version }}: live {{ $labels.metric }} is more than "
        f"{ACCURACY_DROP:g} below its value at registration",
    ),
    (
        "DockyardErrorMetricRise",
        f'dockyard_live_metric{{metric=~"{LOWER_IS_BETTER}"}} > on (model, version, metric) '
        f"group_left () (dockyard_registered_metric * {ERROR_RISE:g})",
        "15m",
        "{{ $labels.model }}:{{ $labels.version }}: live {{ $labels.metric }} is more than "
        f"{ERROR_RISE - 1:.0%} above its value at registration",
    ),
    (
        "DockyardPredictionLogShedding",
        'sum(increase(dockyard_prediction_log_rows_total{outcome="shed"}[5m])) > 0',
        "0m",
        "the prediction log shed rows in the last 5 minutes (its writer falls behind, or "
        "cannot write)",
    ),
    (
        "DockyardSecurityEvents",
        f"sum by (kind) (increase(dockyard_security_events_total[5m])) > {SECURITY_EVENTS}",
        "0m",
        f"over {SECURITY_EVENTS} security events of kind {{{{ $labels.kind }}}} in 5 minutes",
    ),
]
"""Name, PromQL, how long it must hold, and the summary of each alerting rule."""


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard (JSON model), its Prometheus data source and model chosen on it."""
    panels = []
    for index, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for n, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "title": "Dockyard",
        "uid": "dockyard",
        "tags": ["dockyard"],
        "schemaVersion": 39,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": "label_values(dockyard_requests_total, model)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def rules_yaml() -> str:
    """The Prometheus alerting rules file. Every value is written as a JSON string, which YAML
    reads as a double-quoted scalar: no quoting rules to get wrong, no YAML library needed."""
    lines = ["groups:", "  - name: dockyard", "    rules:"]
    for name, expr, duration, summary in RULES:
        lines += [
            f"      - alert: {json.dumps(name)}",
            f"        expr: {json.dumps(expr)}",
            f"        for: {json.dumps(duration)}",
            "        labels:",
            '          severity: "warning"',
            "        annotations:",
            f"          summary: {json.dumps(summary)}",
        ]
    return "\n".join(lines) + "\n"


@app.command("grafana")
def grafana(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the two files into.")],
) -> None:
    """Write a Grafana dashboard (dockyard-dashboard.json) and Prometheus alerting rules
    (dockyard-alerts.yml) over the metrics of GET /metrics."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DASHBOARD_FILE).write_text(json.dumps(dashboard(), indent=2) + "\n")
        (out / RULES_FILE).write_text(rules_yaml())
    except OSError as exc:
        raise DockyardError(f"cannot write to {out}: {exc.strerror}") from exc
    typer.echo(f"wrote {out / DASHBOARD_FILE}: import it in Grafana")
    typer.echo(f"wrote {out / RULES_FILE}: list it under rule_files in prometheus.yml")
    typer.echo("Prometheus scrapes GET /metrics with a key that may read metrics (e.g. auditor)")
