"""Which converters each ``--target`` tries, in order (``auto``: all of them)."""

from __future__ import annotations

from dockyard.errors import InvalidInput
from dockyard.optimize.boosters_onnx import OnnxmltoolsConverter
from dockyard.optimize.conversion import Converter
from dockyard.optimize.native import Tl2cgenConverter
from dockyard.optimize.sklearn_onnx import Skl2OnnxConverter
from dockyard.optimize.torch_onnx import TorchOnnxConverter
from dockyard.optimize.treelite_import import TreeliteConverter

AUTO = "auto"
CONVERTERS: dict[str, tuple[Converter, ...]] = {
    "onnx": (Skl2OnnxConverter(), OnnxmltoolsConverter(), TorchOnnxConverter()),
    "treelite": (TreeliteConverter(),),
    "native": (Tl2cgenConverter(),),
}
TARGETS = (*CONVERTERS, AUTO)


def converters_for(target: str, framework: str | None = None) -> tuple[Converter, ...]:
    """The converters ``target`` names (those that take ``framework``'s versions, when given);
    InvalidInput listing the targets for an unknown one."""
    if target == AUTO:
        named = tuple(converter for group in CONVERTERS.values() for converter in group)
    elif target in CONVERTERS:
        named = CONVERTERS[target]
    else:
        raise InvalidInput(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    return tuple(c for c in named if framework is None or framework in c.frameworks)
