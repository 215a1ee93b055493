"""What ``dockyard models show`` says about optimization: for an optimized version, where it came
from and what it gained; for any version, the optimized variants made from it, each with its
measured speed-up and error (``dockyard optimize`` records both in the variant's lineage)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def variants_of(ref: str, versions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The versions (as ``to_dict`` gives them) optimized from the version ``ref``."""
    return [
        version
        for version in versions
        if (version["lineage"].get("optimization") or {}).get("source") == ref
    ]


def print_optimization(
    console: Console, data: Mapping[str, Any], versions: Sequence[Mapping[str, Any]]
) -> None:
    """The version's own optimization record, then its optimized variants as a table."""
    record = data["lineage"].get("optimization")
    if record:
        console.print(
            f"optimized from {record['source']} by {record['converter']} "
            f"{record['converter_version']}: {_speedups(record)}, max error "
            f"{record['max_error']:.3g} (tolerance {record['tolerance']:g})",
            markup=False,
        )
    ref = f"{data['model']}:{data['version']}"
    variants = variants_of(ref, versions)
    if not variants:
        return
    from rich.table import Table

    table = Table(
        "version",
        "framework",
        "converter",
        "speed-up",
        "max error",
        "aliases",
        title=f"optimized variants of {ref}",
    )
    for variant in variants:
        found = variant["lineage"]["optimization"]
        table.add_row(
            f"{variant['model']}:{variant['version']}",
            variant["framework"],
            f"{found['converter']} {found['converter_version']}",
            _speedups(found),
            f"{found['max_error']:.3g}",
            ", ".join(variant["aliases"]) or "-",
        )
    console.print(table)


def _speedups(record: Mapping[str, Any]) -> str:
    return ", ".join(f"x{value} at batch {key}" for key, value in record["speedup"].items())
