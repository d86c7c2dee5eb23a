"""The Keras 3 adapter: logits equal to Keras's own predictions, gradients equal to finite differences, layouts that
round-trip, malicious files (Lambda layers, custom objects, in .keras and .h5) refused with nothing executed, a
SavedModel folder answered with how to convert it, and whole audits of Keras models (CLI and Python API)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelsec.core.errors import ModelLoadError, UnsafeModelError
from modelsec.models.adapters import keras as keras_adapter
from modelsec.models.layout import from_model_layout, plan_layout, to_model_layout
from modelsec.models.loading import load_model
from tests.cli_runner import assert_user_error, modelsec
from tests.conftest import needs_fashion_mnist

# Keras's torch backend converts tensors with np.array(x) (numpy 2 deprecation, Keras's code, not modelsec's)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras is not installed")


# -- layouts (no Keras needed) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_shape", "model_shape", "kind", "resolved"),
    [
        ((1, 28, 28), (28, 28), "drop-channel", (28, 28)),
        ((1, 28, 28), (28, 28, 1), "channels-last", (28, 28, 1)),
        ((3, 8, 8), (8, 8, 3), "channels-last", (8, 8, 3)),
        ((3, 8, 8), (None, None, 3), "channels-last", (8, 8, 3)),
        ((3, 8, 8), (192,), "reshape", (192,)),
        ((64,), (64,), "identity", (64,)),
        ((64,), (8, 8), "reshape", (8, 8)),
        ((1, 28, 28), (784,), "reshape", (784,)),
    ],
)
def test_layouts_round_trip(
    data_shape: tuple[int, ...], model_shape: tuple[int | None, ...], kind: str, resolved: tuple[int, ...]
) -> None:
    layout = plan_layout(data_shape, model_shape)
    assert (layout.kind, layout.model_shape) == (kind, resolved)
    x = torch.randn((5, *data_shape), generator=torch.Generator().manual_seed(0))
    m = to_model_layout(x, layout)
    assert tuple(m.shape) == (5, *resolved)
    assert torch.equal(from_model_layout(m, layout), x)
    if len(data_shape) == 3:  # the channels-last image, whatever shape the model takes it in
        hwc = x.permute(0, 2, 3, 1)
        assert torch.equal(m.reshape(hwc.shape), hwc)


@pytest.mark.parametrize(
    ("data_shape", "model_shape"), [((3, 8, 8), (8, 8)), ((64,), (63,)), ((1, 28, 28), (28, 28, 3)), ((4,), (None,))]
)
def test_layouts_that_cannot_match_are_refused(
    data_shape: tuple[int, ...], model_shape: tuple[int | None, ...]
) -> None:
    if model_shape == (None,):  # any length: the identity, not a refusal
        assert plan_layout(data_shape, model_shape).kind == "identity"
        return
    with pytest.raises(ModelLoadError, match="cannot be mapped to; check that --data"):
        plan_layout(data_shape, model_shape)


# -- the configuration walk (no Keras needed) -------------------------------------------------------------------------


def _obj(module: str | None, cls: str, registered: str | None = None, **config: Any) -> dict[str, Any]:
    return {"module": module, "class_name": cls, "config": config, "registered_name": registered}


def test_the_walk_accepts_built_ins_and_refuses_code() -> None:
    dense = _obj("keras.layers", "Dense", name="d", activation=_obj("builtins", "function", "function"))
    dense["config"]["activation"]["config"] = "relu"
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, 4]}}
    model = _obj("keras", "Sequential", layers=[dense, tensor])
    model["compile_config"] = {"loss": _obj("my.losses", "Focal")}  # never deserialised (compile=False)
    assert keras_adapter.unsafe_objects(model) == []

    cases = {
        "Lambda layer 'evil'": _obj("keras.layers", "Lambda", name="evil"),
        "Python lambda": {"class_name": "__lambda__", "config": {"code": "4wEAAAA"}},
        "custom object 'Pkg>Layer'": _obj("my_layers", "Layer", "Pkg>Layer"),
        "unregistered custom object 'Doubler'": _obj(None, "Doubler", "Doubler"),
        "from module 'os'": _obj("os", "system"),
        "custom function 'evil' from module 'mymod'": {**_obj("mymod", "function", "function"), "config": "evil"},
        "Keras API keras.utils.get_file": _obj("keras.utils", "get_file"),
        "Keras API keras.src.saving.serialization_lib": _obj("keras.src.saving", "serialization_lib"),
    }
    for expected, node in cases.items():
        found = keras_adapter.unsafe_objects(_obj("keras", "Sequential", layers=[dense, node]))
        assert len(found) == 1 and expected in found[0], (expected, found)
    # a legacy (.h5) configuration names no modules: class names resolve among Keras's built-ins only
    assert keras_adapter.unsafe_objects({"class_name": "Dense", "config": {}}, legacy=True) == []
    assert keras_adapter.unsafe_objects({"class_name": "Dense", "config": {}}) != []
    assert "Lambda" in keras_adapter.unsafe_objects({"class_name": "Lambda", "config": {}}, legacy=True)[0]


# -- loading: numbers ------------------------------------------------------------------------------------------------


def _models(keras: Any) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """Tiny models of each layout and output kind, with seeded initial weights, and the records they take."""
    init = keras.initializers.GlorotUniform(seed=0)
    layers = keras.layers
    return {
        "mission-mlp": (
            keras.Sequential(
                [
                    keras.Input((28, 28)),
                    layers.Flatten(),
                    layers.Dense(16, activation="relu", kernel_initializer=init),
                    layers.Dense(10, kernel_initializer=init),
                ]
            ),
            (1, 28, 28),
        ),
        "conv-softmax": (
            keras.Sequential(
                [
                    keras.Input((8, 8, 3)),
                    layers.Conv2D(4, 3, activation="tanh", kernel_initializer=init),
                    layers.Flatten(),
                    layers.Dense(5, kernel_initializer=init),
                    layers.Softmax(),
                ]
            ),
            (3, 8, 8),
        ),
        "tabular-sigmoid": (
            keras.Sequential([keras.Input((6,)), layers.Dense(1, activation="sigmoid", kernel_initializer=init)]),
            (6,),
        ),
    }


@needs_keras
@pytest.mark.numerics
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_logits_equal_keras_predictions(keras: Any, tmp_path: Path, suffix: str) -> None:
    for name, (model, shape) in _models(keras).items():
        path = tmp_path / f"{name}{suffix}"
        model.save(path)
        loaded = load_model(path, input_shape=shape, bounds=(0.0, 1.0))
        assert loaded.info.format == ("keras" if suffix == ".keras" else "keras-h5")
        assert loaded.info.arch == "keras:Sequential" and loaded.info.input_shape == list(shape)
        x = torch.rand((7, *shape), generator=torch.Generator().manual_seed(1))
        # the model's own layout, written out by hand: channels last, no channel axis for the grey image
        native_input = x[:, 0] if name == "mission-mlp" else x.permute(0, 2, 3, 1) if name == "conv-softmax" else x
        native = model.predict(native_input.numpy(), verbose=0)
        logits = loaded.classifier.predict_logits(x).numpy()
        if name == "conv-softmax":  # probabilities: read as log-probabilities
            assert "softmax" in " ".join(loaded.info.notes)
            np.testing.assert_allclose(np.exp(logits), native, atol=1e-6)
            np.testing.assert_allclose(logits, np.log(native), atol=1e-5)
        elif name == "tabular-sigmoid":  # one sigmoid output p: two classes, log(1 - p) and log(p)
            assert loaded.classifier.num_classes == 2
            np.testing.assert_allclose(np.exp(logits), np.concatenate([1 - native, native], axis=1), atol=1e-6)
        else:
            assert loaded.classifier.num_classes == 10
            np.testing.assert_allclose(logits, native, atol=1e-5)
            assert any("channel axis dropped" in n for n in loaded.info.notes)


@needs_keras
@pytest.mark.numerics
@pytest.mark.parametrize("softmax", [False, True])
def test_input_gradients_equal_finite_differences(keras: Any, softmax: bool) -> None:
    """Directional derivatives along random directions and along single coordinates (which a wrong layout would
    swap) by central differences with Richardson extrapolation (error O(h^4)), since Keras computes in float32
    (its type promotion turns float64 into float32)."""
    layers = keras.layers
    init = keras.initializers.GlorotUniform(seed=3)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Conv2D(3, 3, activation="tanh", kernel_initializer=init),
            layers.Flatten(),
            layers.Dense(4, activation="softmax" if softmax else "tanh", kernel_initializer=init),
        ]
    )
    module = keras_adapter.keras_module(model, (2, 6, 6))
    assert module.output == ("probabilities" if softmax else "logits")
    module.eval()
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((2, 2, 6, 6), generator=g)
        w = torch.randn((2, 4), generator=g)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((module(xg) * w).sum(), xg)
        assert grad.abs().sum() > 0
        directions = [torch.randn(x.shape, generator=g) for _ in range(3)]
        for i in torch.randperm(x.numel(), generator=g)[:6].tolist():
            e = torch.zeros(x.numel())
            e[i] = 1.0
            directions.append(e.reshape(x.shape))
        for v in directions:
            numeric = _richardson_derivative(lambda z, w=w: (module(z).double() * w).sum(), x, v, h=0.02)
            assert numeric == pytest.approx(float((grad * v).sum()), rel=2e-3, abs=2e-5)


def _richardson_derivative(f: Any, x: torch.Tensor, v: torch.Tensor, h: float) -> float:
    """The derivative of ``f`` at ``x`` along ``v``: central differences at steps h and h/2, extrapolated."""

    def central(step: float) -> float:
        with torch.no_grad():
            return float(f(x + step * v) - f(x - step * v)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@needs_keras
def test_a_classifier_over_a_keras_model_gives_input_gradients(keras: Any, tmp_path: Path) -> None:
    model, shape = _models(keras)["mission-mlp"]
    model.save(tmp_path / "m.keras")
    clf = load_model(tmp_path / "m.keras", input_shape=shape, num_classes=10).classifier
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(2))
    grad = clf.input_gradient(x, torch.tensor([0, 1, 2, 3]))
    assert grad.shape == x.shape and grad.abs().sum() > 0
    assert all(p.requires_grad for p in clf.module.parameters())  # the weights' flags restored after the attack


@needs_keras
def test_mismatched_data_is_refused(keras: Any, tmp_path: Path) -> None:
    model, _ = _models(keras)["mission-mlp"]
    model.save(tmp_path / "m.keras")
    with pytest.raises(ModelLoadError, match="cannot be mapped"):
        load_model(tmp_path / "m.keras", input_shape=(3, 28, 28))
    with pytest.raises(ModelLoadError, match="10 classes but the data have 3"):
        load_model(tmp_path / "m.keras", input_shape=(1, 28, 28), num_classes=3)
    loaded = load_model(tmp_path / "m.keras")  # no data: the records the model implies
    assert loaded.classifier.input_shape == (1, 28, 28)


# -- loading: safety -------------------------------------------------------------------------------------------------


def _evil_model(keras: Any, canary: Path) -> Any:
    """A digits-shaped model whose Lambda layer writes ``canary`` whenever it runs (also while Keras rebuilds the
    model on loading)."""
    payload = eval(f"lambda t: (open({str(canary)!r}, 'w').write('ran'), t)[1]")
    return keras.Sequential([keras.Input((64,)), keras.layers.Lambda(payload), keras.layers.Dense(10)])


@needs_keras
def test_a_keras_archive_with_a_lambda_is_refused_with_nothing_run(keras: Any, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.keras"
    _evil_model(keras, canary).save(evil)
    canary.unlink(missing_ok=True)  # building the model ran it; the file must not

    proc = modelsec("audit", "--model", str(evil), "--data", "digits", "--samples", "10", "--out", str(tmp_path / "a"))
    assert_user_error(proc, "Lambda layer")
    assert "--trust-model" in proc.stderr
    assert not canary.exists()

    loaded = load_model(evil, input_shape=(64,), num_classes=10, trust_model=True)
    assert canary.exists()  # the payload is live: trusted, Keras ran it
    assert any("--trust-model" in n for n in loaded.info.notes)


@needs_keras
def test_an_h5_file_with_a_lambda_is_refused_with_nothing_run(keras: Any, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.h5"
    _evil_model(keras, canary).save(evil)  # Keras 3's legacy HDF5 writer
    canary.unlink(missing_ok=True)
    with pytest.raises(UnsafeModelError, match="Lambda layer"):
        load_model(evil, input_shape=(64,), num_classes=10)
    assert not canary.exists()
    load_model(evil, input_shape=(64,), num_classes=10, trust_model=True)
    assert canary.exists()


@needs_keras
def test_a_hand_made_h5_with_a_lambda_is_refused_before_keras_reads_it(tmp_path: Path) -> None:
    """What an attacker writes by hand: an HDF5 file with only a model_config attribute."""
    import h5py

    config = {"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {"name": "x"}}]}}
    path = tmp_path / "hand.weights"  # the extension does not matter: formats are detected by content
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(UnsafeModelError, match="Lambda layer 'x'"):
        load_model(path, input_shape=(64,), num_classes=10)
    with h5py.File(tmp_path / "weights-only.h5", "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(ModelLoadError, match="without a model configuration"):
        load_model(tmp_path / "weights-only.h5")


@needs_keras
def test_custom_objects_are_refused(keras: Any, tmp_path: Path) -> None:
    class Doubler(keras.layers.Layer):  # type: ignore[misc,name-defined]
        def call(self, x: Any) -> Any:
            return x * 2

    registered = keras.saving.register_keras_serializable(package="ModelsecTest")(
        type("Tripler", (keras.layers.Layer,), {"call": lambda self, x: x * 3})
    )
    for name, layer in {"unregistered": Doubler(), "registered": registered()}.items():
        path = tmp_path / f"{name}.keras"
        keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(3)]).save(path)
        with pytest.raises(UnsafeModelError, match="custom object"):
            load_model(path, input_shape=(4,), num_classes=3)


@needs_keras
def test_a_savedmodel_folder_gets_conversion_steps(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    proc = modelsec("audit", "--model", str(folder), "--data", "digits", "--out", str(tmp_path / "a"))
    assert_user_error(proc, "TensorFlow SavedModel")
    assert "model.save('model.keras')" in proc.stderr and "tf2onnx" in proc.stderr


# -- whole audits ----------------------------------------------------------------------------------------------------


@needs_keras
@pytest.mark.slow
def test_cli_audit_of_a_keras_mlp_on_digits(keras: Any, tmp_path: Path) -> None:
    from modelsec.data import load_splits

    members = load_splits("digits").members
    init = keras.initializers.GlorotUniform(seed=0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ]
    )
    # trained through the torch module (Keras's own fit is slower by far on 2 cores): the weights are the model's
    module = keras_adapter.keras_module(model, (64,))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    x, y = torch.from_numpy(members.x), torch.from_numpy(members.y)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
    model.save(tmp_path / "mlp.keras")

    out = tmp_path / "audit"
    proc = modelsec(
        "audit", "--model", str(tmp_path / "mlp.keras"), "--data", "digits", "--preset", "quick",
        "--samples", "50", "--mia-samples", "100", "--eps", "0.05", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["model"]["format"] == "keras" and result["model"]["arch"] == "keras:Sequential"
    assert result["model"]["input_shape"] == [64] and result["model"]["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert any("inputs passed unchanged" in n for n in result["model"]["notes"])
    robustness = result["robustness"]
    assert robustness["clean_accuracy"] > 0.8  # a trained MLP (~0.95): the records reached the model intact
    assert robustness["robust_accuracy"]["0.05"] <= robustness["clean_accuracy"]
    assert not any(s["attack"] == "apgd-ce" for s in robustness["skipped"])  # white-box: gradients flow


@needs_keras
@needs_fashion_mnist
def test_python_audit_of_the_mission_model_object(keras: Any, tmp_path: Path) -> None:
    import modelsec

    model, _ = _models(keras)["mission-mlp"]
    assert keras_adapter.wraps(model) and not keras_adapter.wraps(keras.layers.Dense(3))
    assert not keras_adapter.wraps(torch.nn.Linear(2, 2))
    result = modelsec.audit(
        model=model, data="fashion-mnist", samples=20, mia_samples=100, eps=(0.03,), preset="quick",
        out=tmp_path / "a",
    )  # fmt: skip
    assert result.model.format == "keras" and result.model.arch == "keras:Sequential"
    assert result.model.input_shape == [1, 28, 28] and result.model.parameters == 784 * 16 + 16 + 16 * 10 + 10
    assert any("channel axis dropped" in n for n in result.model.notes)


@needs_keras
def test_fresh_model_reinitialises_the_architecture_from_a_seed(keras: Any) -> None:
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3)])
    a, b, c = (keras_adapter.fresh_model(model, seed) for seed in (1, 1, 2))
    assert [w.shape for w in a.weights] == [w.shape for w in model.weights]
    kernels = [np.asarray(m.layers[0].kernel) for m in (a, b, c, model)]
    assert np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[0], kernels[2]) and not np.array_equal(kernels[0], kernels[3])
    module = keras_adapter.keras_module(a, (6,))
    assert module(torch.rand(2, 6)).shape == (2, 3)


def test_importing_modelsec_does_not_import_keras() -> None:
    code = (
        "import sys, modelsec, modelsec.models.loading, modelsec.models.adapters.keras; print('keras' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


@needs_keras
def test_keras_missing_or_on_another_backend_is_a_config_error(keras: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsec.core.errors import ConfigError

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ConfigError, match="KERAS_BACKEND=torch"):
        keras_adapter.import_keras()
    monkeypatch.setitem(sys.modules, "keras", None)  # makes `import keras` fail
    with pytest.raises(ConfigError, match=r"modelsec\[keras\]"):
        keras_adapter.import_keras()
