"""The torch runtime: scripted and traced modules, named inputs and outputs, TorchScript files."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from extras import NO_TORCH

torch = pytest.importorskip("torch", reason=NO_TORCH)

from dockyard.errors import InvalidInput, PredictionFailed  # noqa: E402
from dockyard.runtimes import torch as torch_runtime  # noqa: E402
from dockyard.runtimes.base import LoadOptions  # noqa: E402

from .conftest import RoundTrip  # noqa: E402


class Scorer(torch.nn.Module):
    """Scriptable: one input, one output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


class Untraceable(Scorer):
    """A lambda in forward: torch.jit.script refuses it, torch.jit.trace does not mind."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = lambda t: t * 2  # noqa: E731
        return double(self.linear(x))


class TwoHeads(torch.nn.Module):
    """Two inputs, a tuple of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.linear(x) + offset
        return logits, logits.argmax(dim=-1)


def expected(module: torch.nn.Module, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.inference_mode():
        result = module(*(torch.as_tensor(a, dtype=torch.float32) for a in arrays))
    results = result if isinstance(result, tuple) else (result,)
    return tuple(r.numpy() for r in results)


def test_scripted_module_roundtrip(features: np.ndarray, roundtrip: RoundTrip) -> None:
    module = Scorer().eval()

    saved, runtime = roundtrip(torch_runtime, module)

    assert saved.format == "torchscript"
    assert runtime.fork_safe  # on the CPU; a CUDA model is not
    assert saved.options == {
        "input_names": ["input-0"],
        "output_names": ["output-0"],
        "float_dtype": "float32",
    }
    assert runtime.input_names == ("input-0",)
    result = runtime.predict({"input-0": features}, ())  # float64 in, cast to the module's float32
    np.testing.assert_allclose(result["output-0"], expected(module, features)[0], rtol=1e-6)


def test_unscriptable_module_needs_example_input(features: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="example_input"):
        torch_runtime.save(Untraceable(), tmp_path)


def test_unscriptable_module_is_traced(features: np.ndarray, roundtrip: RoundTrip) -> None:
    module = Untraceable()

    _, runtime = roundtrip(torch_runtime, module, example_input=features[:5])

    assert module.training, "tracing must leave the caller's module as it was"
    result = runtime.predict(features, ())
    np.testing.assert_allclose(result["output-0"], expected(module, features)[0], rtol=1e-6)


def test_named_inputs_and_discovered_outputs(features: np.ndarray, roundtrip: RoundTrip) -> None:
    module = TwoHeads()
    offset = np.full((len(features), 2), 0.25, dtype=np.float32)

    saved, runtime = roundtrip(
        torch_runtime,
        module,
        input_names=["x", "offset"],
        example_input={"x": features[:2], "offset": offset[:2]},
    )

    assert saved.options["output_names"] == ["output-0", "output-1"]
    assert runtime.input_names == ("x", "offset")
    result = runtime.predict({"offset": offset, "x": features}, ["output-1"])
    assert list(result) == ["output-1"]
    np.testing.assert_array_equal(result["output-1"], expected(module, features, offset)[1])


def test_read_only_input_is_copied_without_a_warning(
    features: np.ndarray, roundtrip: RoundTrip
) -> None:
    _, runtime = roundtrip(torch_runtime, Scorer())
    frozen = np.frombuffer(features.astype(np.float32).tobytes(), dtype=np.float32).reshape(-1, 4)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = runtime.predict(frozen, ())

    assert result["output-0"].shape == (len(features), 3)


def test_torchscript_file_and_torch_save_pickle(
    features: np.ndarray, tmp_path: Path, roundtrip: RoundTrip
) -> None:
    module = Scorer()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)  # the test's own save
        torch.jit.save(torch.jit.script(module), tmp_path / "scripted.pt")
    torch.save(module.state_dict(), tmp_path / "weights.pth")

    _, runtime = roundtrip(torch_runtime, tmp_path / "scripted.pt")

    np.testing.assert_allclose(
        runtime.predict(features, ())["output-0"], expected(module, features)[0], rtol=1e-6
    )
    with pytest.raises(InvalidInput, match="torch.jit.save"):
        torch_runtime.save(tmp_path / "weights.pth", tmp_path)


def test_a_torchscript_zip_whose_compressed_members_inflate_too_far_is_refused(
    tmp_path: Path, roundtrip: RoundTrip
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)  # the test's own save
        torch.jit.save(torch.jit.script(Scorer()), tmp_path / "scripted.pt")
    bomb = tmp_path / "bomb.pt"
    with (
        zipfile.ZipFile(tmp_path / "scripted.pt") as source,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_STORED) as target,
    ):
        for info in source.infolist():
            target.writestr(info, source.read(info))
        # 256 MiB of zeros deflate to a quarter of a megabyte.
        target.writestr("scripted/extra/padding", bytes(256 * 2**20), zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(InvalidInput, match=r"inflate to 268,4.*\(MAX_INFLATED_BYTES"):
        roundtrip(torch_runtime, bomb)


@pytest.mark.parametrize(
    ("x", "outputs", "error", "message"),
    [
        ({"other": np.zeros((1, 4))}, (), InvalidInput, "missing input 'input-0'"),
        (np.array([["a", "b", "c", "d"]]), (), InvalidInput, "must be numeric"),
        (np.zeros((1, 4)), ("nope",), InvalidInput, "unknown output 'nope'"),
        (np.zeros((1, 3)), (), PredictionFailed, "RuntimeError"),
    ],
    ids=["missing-input", "strings", "unknown-output", "wrong-shape"],
)
def test_bad_requests(
    x: object,
    outputs: tuple[str, ...],
    error: type[Exception],
    message: str,
    roundtrip: RoundTrip,
) -> None:
    _, runtime = roundtrip(torch_runtime, Scorer())
    with pytest.raises(error, match=message):
        runtime.predict(x, outputs)


def test_output_count_must_match_the_names(features: np.ndarray, tmp_path: Path) -> None:
    saved = torch_runtime.save(TwoHeads(), tmp_path, input_names=["x", "offset"])
    runtime = torch_runtime.load(
        saved.path, LoadOptions(format="torchscript", options=saved.options)
    )

    with pytest.raises(PredictionFailed, match="returned 2 outputs"):
        runtime.predict({"x": features, "offset": np.zeros((len(features), 2))}, ())


def test_is_model() -> None:
    assert torch_runtime.is_model(Scorer())
    assert not torch_runtime.is_model(torch.zeros(2))
