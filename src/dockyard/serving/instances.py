"""KServe V1 codec: ``{"instances": [...]}`` in, named tensors out, ``{"predictions"}`` back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from dockyard.datatypes import FLOATS
from dockyard.errors import InvalidInput, PredictionFailed, SignatureMismatch
from dockyard.registry.plans import no_rows
from dockyard.registry.records import Signature, TensorSpec
from dockyard.serving.protocol import (
    NUMPY_OPTION,
    as_strings,
    invalid_input,
    load_json,
    special_floats,
)


def decode_v1(body: bytes, signature: Signature) -> dict[str, np.ndarray]:
    """Decode a KServe V1 ``{"instances": [...]}`` (or ``"inputs"``) body into named tensors.

    Instances may be rows (lists) or objects keyed by input name. For a tabular signature the result
    is one column per feature; for a tensor signature, one batch per input (rows are allowed only
    when there is a single input). ``null`` in a float feature means a missing value (NaN). No
    instances is an empty batch: every input with no rows.
    Validation against the signature is left to ``registry.signatures.prepare_input``.
    """
    payload = load_json(body)
    instances = None
    if isinstance(payload, dict):
        instances = payload.get("instances", payload.get("inputs"))
    if not isinstance(instances, list):
        raise InvalidInput("request has no 'instances' list")
    if not instances:
        return {spec.name: no_rows(spec) for spec in signature.inputs}
    specs = {spec.name: spec for spec in signature.inputs}
    columns: Mapping[str, Any]
    if isinstance(instances[0], dict):
        columns = _v1_objects(instances, list(specs))
    elif signature.tabular:
        columns = _v1_rows(instances, signature.inputs)
    elif len(specs) == 1:
        columns = {signature.inputs[0].name: instances}
    else:
        raise InvalidInput(
            f"this model takes several inputs ({', '.join(specs)}); "
            "send each instance as an object keyed by input name"
        )
    return {name: _v1_array(name, values, specs[name]) for name, values in columns.items()}


def encode_v1(outputs: Mapping[str, np.ndarray], main: str) -> bytes:
    """Encode a KServe V1 response: ``{"predictions": main}``, plus ``"outputs"`` for the others.

    Non-finite floats become ``null`` (V1 has no convention for them).
    """
    payload: dict[str, Any] = {"predictions": _nested(main, outputs[main])}
    others = {name: _nested(name, value) for name, value in outputs.items() if name != main}
    if others:
        payload["outputs"] = others
    return orjson.dumps(payload, option=NUMPY_OPTION)


def _nested(name: str, value: np.ndarray) -> Any:
    array = np.asarray(value)
    if array.ndim == 0:
        return _nested(name, array.reshape(1))[0]
    if array.dtype.kind in "biuf":
        return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))
    if array.dtype.kind in "OUS":
        flat = as_strings(name, array.ravel().tolist())
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    raise PredictionFailed(
        f"output {name!r} has numpy dtype {array.dtype}, which the protocol cannot carry"
    )


def _v1_objects(instances: list[Any], names: list[str]) -> dict[str, list[Any]]:
    expected = set(names)
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise InvalidInput(f"instance {index} is not an object like the first instance")
        if instance.keys() != expected:
            missing = [n for n in names if n not in instance]
            if missing:
                raise SignatureMismatch(f"instance {index} is missing input {missing[0]!r}")
            extra = next(key for key in instance if key not in expected)
            raise SignatureMismatch(
                f"instance {index} has unexpected input {extra!r}; this model takes: "
                + ", ".join(names)
            )
    return {name: [instance[name] for instance in instances] for name in names}


def _v1_rows(instances: list[Any], specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    features = len(specs)
    expectation = f"each instance must be a row of {features} values (one per feature: " + (
        ", ".join(spec.name for spec in specs) + ")"
    )
    try:
        array = np.array(instances)
    except ValueError:
        raise InvalidInput(expectation) from None
    if array.ndim == 1 and features == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] != features:
        raise InvalidInput(f"{expectation}; got shape {list(array.shape)}")
    if array.dtype.kind not in "biuf":
        # Mixed rows (strings and numbers): numpy would turn every value into a string.
        array = np.array(instances, dtype=object).reshape(array.shape)
        return {spec.name: array[:, j].tolist() for j, spec in enumerate(specs)}
    return {spec.name: array[:, j] for j, spec in enumerate(specs)}


def _v1_array(name: str, values: Any, spec: TensorSpec) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if spec.datatype == "BYTES":
        return np.array(values, dtype=object)
    try:
        array = np.array(values)
    except ValueError:
        raise invalid_input(name, "instances are ragged") from None
    if spec.datatype in FLOATS and array.dtype.kind in "UO":
        return special_floats(name, values, spec.datatype, null=True).reshape(array.shape)
    return array
