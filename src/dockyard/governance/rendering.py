"""Governance documents rendered with Jinja2 templates (package data under ``templates/``): a
model card as Markdown or HTML, and the compliance report as one self-contained HTML page.

HTML is autoescaped. Markdown is not HTML, so it is not autoescaped; the ``markdown`` filter turns
each ``<`` of the user's text into ``&lt;`` instead, so no text becomes a tag when a viewer
renders the file. The pages carry their style inline and a policy that forbids loading anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

from dockyard.errors import InvalidInput
from dockyard.governance.cards import CARD_FIELDS, FIELD_TITLES

CARD_FORMATS = ("markdown", "html", "json")
REPORT_FORMATS = ("html", "json")


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("dockyard.governance", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["markdown"] = _markdown
    environment.filters["cell"] = _cell
    environment.filters["when"] = _when
    environment.globals.update(fields=CARD_FIELDS, titles=FIELD_TITLES)
    return environment


def render(template: str, **context: Any) -> str:
    """``template`` (a file of ``templates/``) rendered with ``context``."""
    return _environment().get_template(template).render(**context)


def render_card(document: Mapping[str, Any], format: str) -> str:
    """A card document (``cards.card_document``) in ``format``: Markdown (its fields, then its
    lineage), one HTML page that loads nothing, or JSON. InvalidInput for another format."""
    if format == "markdown":
        return render("card.md", doc=document)
    if format == "html":
        return render("card.html", doc=document)
    if format == "json":
        return json.dumps(document, indent=2) + "\n"
    raise InvalidInput(f"a card's format is one of {', '.join(CARD_FORMATS)}, not {format!r}")


def render_report(report: Mapping[str, Any], format: str) -> str:
    """A compliance report (``services.report.build_report``) in ``format``: one HTML page that
    loads nothing (it opens offline, as a reviewer's copy), or JSON with the same facts."""
    if format == "html":
        return render("report.html", report=report)
    if format == "json":
        return json.dumps(report, indent=2) + "\n"
    raise InvalidInput(f"a report's format is one of {', '.join(REPORT_FORMATS)}, not {format!r}")


def _markdown(value: object) -> str:
    return str(value).replace("<", "&lt;")


def _cell(value: object) -> str:
    """A value inside a Markdown table row: one line, no column separator."""
    return " ".join(_markdown(value).split()).replace("|", "\\|")


def _when(value: object) -> str:
    """An ISO time (or a Unix time) as ``2026-12-02 06:33:28 UTC``; ``-`` for none."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        moment = datetime.fromisoformat(str(value))
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
