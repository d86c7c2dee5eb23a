"""The ONNX adapter: modelsec's graph interpreter against onnxruntime (logits on random inputs, gradients against
finite differences), the score-only fallback, external data outside the model's folder refused, input layouts, and
randomness in the graph seen by the audit's randomness check."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from modelsec import audit
from modelsec.audits.sanity import check_randomness
from modelsec.core.errors import ModelLoadError, UnsafeModelError
from modelsec.core.seeding import seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses.training import TrainingConfig, train_classifier
from modelsec.models import Capability, Classifier, build_architecture
from modelsec.models.adapters import onnx as onnx_adapter
from modelsec.models.adapters import onnx_torch
from modelsec.models.adapters.onnx_torch import OnnxGraphModule
from modelsec.models.card import ModelCard
from modelsec.models.loading import load_model
from modelsec.models.torch import save_safetensors
from tests.cli_runner import modelsec

# -- helpers ------------------------------------------------------------------------------------------------------


def export(module: nn.Module, shape: tuple[int, ...], path: Path, *, dynamic: bool = True, **kw: object) -> Path:
    """The legacy (TorchScript) exporter, as most ONNX files in the wild were made; it emits opset 20 here."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(2, *shape),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}} if dynamic else None,
            **kw,  # type: ignore[arg-type]
        )
    return path


def runtime(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def save_graph(
    path: Path,
    nodes: list[onnx.NodeProto],
    inits: list[TensorProto],
    in_shape: list[int | str],
    out_shape: list[int | str],
    opset: int = 17,
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rng_array(*shape: int, seed: int = 0, scale: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def bn_cnn(side: int = 28) -> nn.Module:
    """A CNN with BatchNorm (eval statistics made non-trivial), MaxPool, a grouped strided conv and AvgPool, for
    ``(1, side, side)`` inputs."""
    features = 4 * (-(-side // 4) // 2) ** 2
    with seeded(0):
        net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 4, 3, stride=2, groups=4, padding=1),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(features, 10),
        )
        bn = net[1]
        assert isinstance(bn, nn.BatchNorm2d)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    return net.eval()


# -- hand-built graphs: every operator family against onnxruntime -------------------------------------------------


def gemm_relu_softmax(path: Path) -> tuple[Path, tuple[int, ...]]:
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, alpha=0.5),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], beta=2.0),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    inits = [
        tensor("w1", rng_array(16, 12)),
        tensor("b1", rng_array(16, seed=1)),
        tensor("w2", rng_array(16, 3, seed=2)),
        tensor("b2", rng_array(3, seed=3)),
    ]
    return save_graph(path, nodes, inits, ["n", 12], ["n", 3]), (12,)


def conv_zoo(path: Path) -> tuple[Path, tuple[int, ...]]:
    """Conv with asymmetric pads and SAME_UPPER, LeakyRelu, AveragePool without padding counted, MaxPool with pads,
    GlobalAveragePool, Concat, Squeeze / Unsqueeze with axes inputs (opset 13+), Clip, Sigmoid, Tanh, LogSoftmax."""
    nodes = [
        helper.make_node("Conv", ["x", "k1", "c1"], ["a"], pads=[1, 0, 0, 1], strides=[1, 2]),
        helper.make_node("LeakyRelu", ["a"], ["a2"], alpha=0.2),
        helper.make_node("Conv", ["x", "k2"], ["b"], auto_pad="SAME_UPPER", strides=[2, 2], group=1),
        helper.make_node("Tanh", ["b"], ["b2"]),
        helper.make_node("AveragePool", ["a2"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1]),
        helper.make_node("MaxPool", ["b2"], ["q"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("GlobalAveragePool", ["p"], ["gp"]),
        helper.make_node("GlobalAveragePool", ["q"], ["gq"]),
        helper.make_node("Concat", ["gp", "gq"], ["c"], axis=1),
        helper.make_node("Squeeze", ["c", "sq_axes"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["sg"]),
        helper.make_node("Clip", ["sg", "lo", "hi"], ["cl"]),
        helper.make_node("MatMul", ["cl", "w"], ["z"]),
        helper.make_node("Unsqueeze", ["z", "us_axes"], ["zu"]),
        helper.make_node("Flatten", ["zu"], ["zf"]),
        helper.make_node("LogSoftmax", ["zf"], ["y"], axis=-1),
    ]
    inits = [
        tensor("k1", rng_array(4, 2, 3, 3)),
        tensor("c1", rng_array(4, seed=1)),
        tensor("k2", rng_array(3, 2, 2, 3, seed=2)),
        tensor("sq_axes", np.array([2, 3], dtype=np.int64)),
        tensor("lo", np.array(0.3, dtype=np.float32)),
        tensor("hi", np.array(0.7, dtype=np.float32)),
        tensor("w", rng_array(7, 5, seed=3, scale=3.0)),
        tensor("us_axes", np.array([1], dtype=np.int64)),
    ]
    return save_graph(path, nodes, inits, ["n", 2, 9, 8], ["n", 5]), (2, 9, 8)


def shape_zoo(path: Path) -> tuple[Path, tuple[int, ...]]:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (the older exporters' flatten), Reshape with 0 / -1,
    Transpose, Pad, Sub / Mul / Div by constants, Cast, Identity, inference Dropout, Constant."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["flat"], axis=0),
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Pad", ["t", "pads", "padv"], ["tp"], mode="constant"),
        helper.make_node("Reshape", ["tp", "keep_batch"], ["r"]),
        helper.make_node("Reshape", ["r", "flat"], ["f"]),
        helper.make_node("Constant", [], ["mean"], value=tensor("m", np.array([0.25], dtype=np.float32))),
        helper.make_node("Sub", ["f", "mean"], ["c"]),
        helper.make_node("Cast", ["two"], ["two_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["c", "two_f"], ["d"]),
        helper.make_node("Mul", ["d", "scale"], ["e"]),
        helper.make_node("Dropout", ["e"], ["e2"]),
        helper.make_node("Identity", ["e2"], ["e3"]),
        helper.make_node("MatMul", ["e3", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["y"]),
    ]
    inits = [
        tensor("zero", np.array(0, dtype=np.int64)),
        tensor("axis0", np.array([0], dtype=np.int64)),
        tensor("minus1", np.array([-1], dtype=np.int64)),
        tensor("pads", np.array([0, 1, 0, 0, 0, 2], dtype=np.int64)),
        tensor("padv", np.array(0.5, dtype=np.float32)),
        tensor("keep_batch", np.array([0, -1, 2], dtype=np.int64)),
        tensor("two", np.array(2, dtype=np.int64)),
        tensor("scale", rng_array(72, seed=1)),  # (6, 8) -> (8, 6) -> padded (9, 8)
        tensor("w", rng_array(72, 4, seed=2)),
        tensor("b", rng_array(4, seed=3)),
    ]
    return save_graph(path, nodes, inits, ["n", 6, 8], ["n", 4]), (6, 8)


def old_opset(path: Path) -> tuple[Path, tuple[int, ...]]:
    """Opset 11: Squeeze / Unsqueeze with the axes attribute, Clip with min / max inputs; Softmax before opset 13
    (over the dimensions flattened from axis on)."""
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]),
        helper.make_node("Squeeze", ["u"], ["s"], axes=[1]),
        helper.make_node("Clip", ["s", "lo", ""], ["c"]),
        helper.make_node("MatMul", ["c", "w"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    inits = [tensor("lo", np.array(0.2, dtype=np.float32)), tensor("w", rng_array(10, 3, scale=2.0))]
    return save_graph(path, nodes, inits, ["n", 10], ["n", 3], opset=11), (10,)


HAND_BUILT: dict[str, Callable[[Path], tuple[Path, tuple[int, ...]]]] = {
    "gemm-relu-softmax": gemm_relu_softmax,
    "conv-pool-concat": conv_zoo,
    "shape-reshape-pad": shape_zoo,
    "opset-11": old_opset,
}


@pytest.mark.numerics
@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_hand_built_graphs_match_onnxruntime(name: str, tmp_path: Path) -> None:
    path, shape = HAND_BUILT[name](tmp_path / f"{name}.onnx")
    model = OnnxGraphModule(onnx.load(str(path)))
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(0, 1, (5, *shape)).astype(np.float32)
        ours = model(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(ours, runtime(path, x), rtol=0, atol=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["mlp", "small-cnn", "batchnorm-cnn"])
def test_exported_torch_models_match_onnxruntime_and_torch(arch: str, tmp_path: Path) -> None:
    if arch == "batchnorm-cnn":
        net = bn_cnn()
        kw: dict[str, object] = {"do_constant_folding": False}  # keeps BatchNormalization a node of its own
    else:
        with seeded(0):
            net = build_architecture(arch, (1, 28, 28), 10).eval()
        kw = {}
    path = export(net, (1, 28, 28), tmp_path / "m.onnx", **kw)
    assert onnx.load(str(path)).opset_import[0].version == 20
    if arch == "batchnorm-cnn":
        assert "BatchNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}
    loaded = load_model(path, input_shape=(1, 28, 28), num_classes=10)
    assert loaded.classifier.capability is Capability.GRADIENTS and loaded.info.format == "onnx"
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ours = loaded.classifier.predict_logits(x).numpy()
    np.testing.assert_allclose(ours, runtime(path, x.numpy()), rtol=0, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(ours, net(x).numpy(), rtol=0, atol=1e-5)


@pytest.mark.numerics
def test_gradients_equal_finite_differences(tmp_path: Path) -> None:
    path = export(bn_cnn(12), (1, 12, 12), tmp_path / "m.onnx", do_constant_folding=False)
    module = OnnxGraphModule(onnx.load(str(path))).double()
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # fast mode: the Jacobian projected on random vectors, by finite differences and by autograd (the full
    # Jacobian takes ~10 s a graph on a CPU without SIMD kernels)
    fd = {"atol": 1e-6, "fast_mode": True}
    assert torch.autograd.gradcheck(lambda v: module(v).log_softmax(1), (x.requires_grad_(True),), **fd)
    path, _ = conv_zoo(tmp_path / "zoo.onnx")  # asymmetric pads, SAME_UPPER, pools, clip, squeeze
    module = OnnxGraphModule(onnx.load(str(path))).double()
    x = torch.rand(2, 2, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(module, (x.requires_grad_(True),), **fd)


def test_a_disagreement_with_onnxruntime_refuses_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = gemm_relu_softmax(tmp_path / "m.onnx")
    loaded = load_model(path, input_shape=(12,), num_classes=3)
    assert loaded.check_records is not None
    loaded.check_records(np.random.default_rng(0).uniform(0, 1, (20, 12)).astype(np.float32))
    monkeypatch.setitem(onnx_torch.OPERATORS, "Relu", lambda n, xs: torch.relu(xs[0]) * 1.01)  # type: ignore[index]
    with pytest.raises(ModelLoadError, match=r"disagrees with onnxruntime on random inputs.*differ by up to"):
        load_model(path, input_shape=(12,), num_classes=3)
    with pytest.raises(ModelLoadError, match="on the audited records"):
        loaded.check_records(np.full((4, 12), 3.0, dtype=np.float32))  # the converted module is patched too


# -- the score-only fallback -------------------------------------------------------------------------------------


def test_unsupported_operators_run_through_onnxruntime_without_gradients(tmp_path: Path) -> None:
    digits = load_splits("digits", seed=0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["z"]),
        helper.make_node("Celu", ["z"], ["s"]),
        helper.make_node("Add", ["s", "b"], ["y"]),
    ]
    with seeded(0):
        w = (torch.randn(64, 10) * 0.3).numpy()
    path = save_graph(tmp_path / "m.onnx", nodes, [tensor("w", w), tensor("b", rng_array(10))], ["n", 64], ["n", 10])
    loaded = load_model(path, input_shape=(64,), num_classes=10)
    assert loaded.classifier.capability is Capability.SCORES
    assert loaded.info.capability == "scores" and any("Celu" in n for n in loaded.info.notes)
    x = digits.nonmembers.x[:7]
    np.testing.assert_array_equal(loaded.classifier.predict_logits(x).numpy(), runtime(path, x))

    result = audit(path, digits, eps=(0.1,), samples=20, preset="quick", attacks=("apgd", "square"), mia_samples=60)
    assert result.robustness is not None and result.model.capability == "scores"
    assert {s.attack for s in result.robustness.skipped} == {"apgd"}
    assert "square" in {r.attack for r in result.robustness.results}
    assert any("score-only" in n and "Celu" in n for n in result.model.notes)


# -- safety: external data ---------------------------------------------------------------------------------------


def external_model(folder: Path, location: str) -> Path:
    """A Gemm graph whose weight is read from ``location`` (not checked by onnx.save: a crafted file)."""
    path, _ = gemm_relu_softmax(folder / "m.onnx")
    model = onnx.load(str(path))
    w1 = model.graph.initializer[0]
    w1.ClearField("raw_data")
    w1.ClearField("float_data")
    w1.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "768")):
        entry = w1.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    path, _ = gemm_relu_softmax(tmp_path / "inline.onnx")
    model = onnx.load(str(path))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size > 0
    x = np.random.default_rng(0).uniform(0, 1, (6, 12)).astype(np.float32)
    loaded = load_model(folder / "m.onnx", input_shape=(12,), num_classes=3)
    probabilities = loaded.classifier.predict_logits(x).exp().numpy()  # the graph ends in a Softmax: log-probabilities
    np.testing.assert_allclose(probabilities, runtime(path, x), atol=1e-6)


def test_external_data_outside_the_folder_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 768)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "link.bin").symlink_to(tmp_path / "secret.bin")  # a symlink leading out of the folder

    def never(*args: object) -> None:
        raise AssertionError("external data was read before the check")

    monkeypatch.setattr(onnx_adapter, "_read_external_data", never)
    for location in ("../secret.bin", "/etc/passwd", str(tmp_path / "secret.bin"), "link.bin"):
        path = external_model(model_dir, location)
        with pytest.raises(UnsafeModelError, match="outside the model's folder"):
            load_model(path, input_shape=(12,), num_classes=3)

    path = external_model(model_dir, "../secret.bin")
    proc = modelsec("audit", "--model", str(path), "--data", "digits", "--no-store", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "outside the model's folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "result.json").exists()


# -- layout ------------------------------------------------------------------------------------------------------


def test_flat_and_channels_last_inputs_are_mapped_from_channels_first_records(tmp_path: Path) -> None:
    x = torch.rand(5, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        flat = nn.Sequential(nn.Linear(72, 5))
        channels_last = nn.Sequential(nn.Flatten(), nn.Linear(72, 5))  # takes (N, H, W, C)
    for net, model_shape, kind in ((flat, (72,), "reshaped"), (channels_last, (4, 6, 3), "channels-last")):
        path = export(net, model_shape, tmp_path / "m.onnx")
        loaded = load_model(path, input_shape=(3, 4, 6), num_classes=5)
        assert loaded.classifier.input_shape == (3, 4, 6) and any(kind in n for n in loaded.info.notes)
        mapped = x.reshape(5, 72) if kind == "reshaped" else x.permute(0, 2, 3, 1)
        with torch.no_grad():
            expected = net(mapped.contiguous()).numpy()
        np.testing.assert_allclose(loaded.classifier.predict_logits(x).numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(runtime(path, mapped.contiguous().numpy()), expected, atol=1e-5)
    with pytest.raises(ModelLoadError, match=r"records of shape \(4, 6, 3\) but the data have \(3, 5, 6\)"):
        load_model(path, input_shape=(3, 5, 6), num_classes=5)


def test_a_fixed_batch_size_is_run_in_chunks(tmp_path: Path) -> None:
    with seeded(0):
        net = nn.Sequential(nn.Linear(12, 3))
    net.eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(4, 12),), str(path), dynamo=False)  # batch fixed at 4
    loaded = load_model(path, input_shape=(12,), num_classes=3)
    x = torch.rand(10, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(loaded.classifier.predict_logits(x).numpy(), net(x).numpy(), atol=1e-6)


# -- randomness ----------------------------------------------------------------------------------------------------


class NoisyLogits(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.base(x)
        return z + 0.1 * torch.randn_like(z)


def test_random_normal_like_in_the_graph_is_flagged_like_a_torch_module(tmp_path: Path) -> None:
    path, _ = gemm_relu_softmax(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    graph = model.graph
    graph.node[-1].output[0] = "p"  # y = softmax(...) + RandomNormalLike(...) * 0.1
    graph.node.extend(
        [
            helper.make_node("RandomNormalLike", ["p"], ["noise"], scale=0.1, seed=3.0),
            helper.make_node("Add", ["p", "noise"], ["y"]),
        ]
    )
    onnx.save(model, str(tmp_path / "noisy.onnx"))
    noisy = load_model(tmp_path / "noisy.onnx", input_shape=(12,), num_classes=3)
    assert noisy.classifier.capability is Capability.GRADIENTS
    assert any("RandomNormalLike" in n and "not compared" in n for n in noisy.info.notes)
    x = torch.rand(20, 12, generator=torch.Generator().manual_seed(0))
    torch_noisy = Classifier(NoisyLogits(nn.Linear(12, 3)), input_shape=(12,), num_classes=3)
    for clf in (noisy.classifier, torch_noisy):
        flag = check_randomness(clf, x)
        assert flag is not None and flag.check == "randomness"
    plain = load_model(path, input_shape=(12,), num_classes=3)
    assert check_randomness(plain.classifier, x) is None
    with seeded(5):  # the noise comes from torch's global generator: seeded, the same
        a = noisy.classifier.predict_logits(x)
    with seeded(5):
        b = noisy.classifier.predict_logits(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- the CLI on a digits MLP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", seed=0)


@pytest.fixture(scope="module")
def digits_mlp(digits: Splits, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A digits MLP trained by modelsec, saved as safetensors (with its card) and exported to ONNX."""
    folder = tmp_path_factory.mktemp("digits-mlp")
    with seeded(0):
        net = build_architecture("mlp", digits.input_shape, 10)
    train_classifier(net, digits.members, config=TrainingConfig(epochs=8, batch_size=64, seed=0))
    st = folder / "m.safetensors"
    card = ModelCard(arch="mlp", input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds)
    save_safetensors(net, st, card.to_header())
    return st, export(net, digits.input_shape, folder / "m.onnx")


def test_cli_audit_of_an_onnx_digits_mlp(digits_mlp: tuple[Path, Path], tmp_path: Path) -> None:
    _, onnx_path = digits_mlp
    out = tmp_path / "out"
    proc = modelsec(
        *("audit", "--model", str(onnx_path), "--data", "digits", "--preset", "quick", "--samples", "50"),
        *("--mia-samples", "100", "--no-store", "--out", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["model"]["format"] == "onnx" and result["model"]["capability"] == "gradients"
    assert any("agree with onnxruntime" in n for n in result["model"]["notes"])
    assert result["robustness"]["clean_accuracy"] > 0.8


def test_the_same_mlp_as_safetensors_and_onnx_gives_the_same_clean_accuracy(
    digits_mlp: tuple[Path, Path], digits: Splits
) -> None:
    st, onnx_path = digits_mlp
    kwargs = {
        "eps": (0.05,),
        "samples": 60,
        "preset": "quick",
        "membership_attacks": ("loss-threshold",),
        "mia_samples": 60,
    }
    a = audit(st, digits, **kwargs)  # type: ignore[arg-type]
    b = audit(onnx_path, digits, **kwargs)  # type: ignore[arg-type]
    assert a.robustness is not None and b.robustness is not None
    assert a.robustness.clean_accuracy == b.robustness.clean_accuracy
    assert a.robustness.robust_accuracy == b.robustness.robust_accuracy
    assert b.model.format == "onnx" and a.model.format == "safetensors"
