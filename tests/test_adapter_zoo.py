"""The adapters on models they were not developed on (tests/model_zoo.py): Keras functional and sequential models
(channels last, batch normalisation, dropout, pooling, softmax and sigmoid outputs, rescaling and normalisation
layers, RGB and tabular), torch models exported to ONNX at opsets 11, 13, 17 and 20 with dynamic and fixed batches,
scikit-learn estimators as files and objects, and scoring callables. Each loads with logits equal to its native
runtime's and audits (``quick``) without error; what modelsec cannot audit is refused with what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelsec import audit
from modelsec.core.errors import ModelLoadError, UnsafeModelError
from modelsec.core.seeding import seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.models import Capability
from modelsec.models.adapters.endpoint import EndpointError, ScoreFunction
from modelsec.models.layout import to_model_layout
from modelsec.models.loading import load_model
from tests import model_zoo

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning",  # Keras's torch backend
    "ignore::torch.jit.TracerWarning",
)

QUICK = {
    "eps": (0.1,),
    "samples": 10,
    "preset": "quick",
    "mia_samples": 40,
    "membership_attacks": ("loss-threshold",),
}


@pytest.fixture(scope="module")
def data() -> dict[str, Splits]:
    digits = load_splits("digits", seed=0)
    return {
        "digits": digits,
        "digits-images": model_zoo.as_images(digits, (1, 8, 8)),
        "rgb": model_zoo.rgb_splits(0),
        "breast-cancer": load_splits("breast-cancer", seed=0),
    }


def random_records(splits: Splits, n: int = 16, seed: int = 0) -> torch.Tensor:
    low, high = splits.bounds
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *splits.input_shape), generator=g) * (high - low) + low


# -- Keras ----------------------------------------------------------------------------------------------------------


def keras_native_logits(model: Any, x: np.ndarray, kind: str) -> np.ndarray:
    """What modelsec should read from Keras's own ``predict`` (float64): logits, log-probabilities, or the two
    logits of a one-unit binary output."""
    out = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    if kind == "probabilities":
        return np.log(np.clip(out, np.finfo(np.float32).tiny, None))
    if kind == "binary-probability":
        return np.log(np.clip(np.concatenate([1 - out, out], axis=1), np.finfo(np.float32).tiny, None))
    return out


KERAS_NAMES = [
    "functional-cnn",
    "softmax-output",
    "softmax-layer",
    "rescaling",
    "normalization",
    "rgb-cnn",
    "sigmoid-binary",
    "tabular",
]


@pytest.mark.numerics
@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_zoo_matches_keras_and_audits(name: str, keras: Any, data: dict[str, Splits], tmp_path: Path) -> None:
    build, which = model_zoo.keras_zoo(keras)[name]
    splits = data[which]
    keras.utils.set_random_seed(0)
    model = build()
    suffix = "h5" if name in ("functional-cnn", "sigmoid-binary") else "keras"  # legacy files too
    path = tmp_path / f"{name}.{suffix}"
    model.save(path)
    loaded = load_model(path, input_shape=splits.input_shape, num_classes=splits.num_classes, bounds=splits.bounds)
    module = loaded.classifier.module
    x = random_records(splits)
    native = keras_native_logits(model, to_model_layout(x, module.layout).numpy(), module.output)
    ours = loaded.classifier.predict_logits(x).double().numpy()
    np.testing.assert_allclose(ours, native, atol=1e-5, rtol=1e-5)
    assert loaded.classifier.capability is Capability.GRADIENTS
    with seeded(0):
        result = audit(model, splits, **QUICK)  # the object too, through the same adapter
    assert result.robustness is not None and result.model.format == "keras"
    assert result.robustness.robust_accuracy["0.1"] <= result.robustness.clean_accuracy


@pytest.mark.parametrize("name", ["two-inputs", "two-outputs", "unbuilt-sequential"])
def test_keras_models_modelsec_cannot_audit_are_refused_clearly(name: str, keras: Any, tmp_path: Path) -> None:
    build, message = model_zoo.keras_refused(keras)[name]
    keras.utils.set_random_seed(0)
    model = build()
    with pytest.raises(ModelLoadError, match=message):
        audit(model, "digits", **QUICK)
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(ModelLoadError, match=message):
        load_model(path, input_shape=(64,), num_classes=10)


def test_inputs_rescaled_inside_a_keras_model_are_noted(keras: Any, data: dict[str, Splits]) -> None:
    """A model expecting pixels in 0..255 (``Rescaling(1/255)``) audited on data in [0, 1] still audits the data's
    values, and its notes say how the data reach the model and what to do if the scale is wrong."""
    keras.utils.set_random_seed(0)
    build, _ = model_zoo.keras_zoo(keras)["rescaling"]
    result = audit(build(), data["digits-images"], **QUICK)
    note = next(n for n in result.model.notes if n.startswith("the model rescales its inputs inside"))
    assert "reach its next layer as [0, 0.00392]" in note and "255 times larger" in note
    norm_build, _ = model_zoo.keras_zoo(keras)["normalization"]
    notes = audit(norm_build(), data["digits"], **QUICK).model.notes
    note = next(n for n in notes if n.startswith("the model normalises its inputs inside"))
    assert "means 0.3 to 0.3" in note and "far outside" not in note


# -- ONNX -----------------------------------------------------------------------------------------------------------


def onnx_runtime(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0], dtype=np.float64)


ONNX_CASES = [(name, opset) for name in model_zoo.onnx_zoo() for opset in (11, 13, 17)] + [
    (name, 20)
    for name in ("gelu", "gelu-tanh", "layer-norm")  # opset 20's Gelu operator; LayerNormalization
]


@pytest.mark.numerics
@pytest.mark.parametrize(("name", "opset"), ONNX_CASES)
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "fixed-batch"])
def test_onnx_zoo_is_converted_and_matches_onnxruntime(name: str, opset: int, dynamic: bool, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    if name == "layer-norm" and opset < 17:
        opset = 17  # LayerNormalization exists from opset 17 (before, the exporter writes its arithmetic)
    build, shape = model_zoo.onnx_zoo()[name]
    with seeded(0):
        module = model_zoo.randomise_batch_norm(build())
    path = model_zoo.export_onnx(module, shape, tmp_path / "m.onnx", opset=opset, dynamic=dynamic)
    loaded = load_model(path, input_shape=shape, num_classes=10)
    assert loaded.classifier.capability is Capability.GRADIENTS, loaded.info.notes
    x = torch.rand((7, *shape), generator=torch.Generator().manual_seed(1))  # 7: not a multiple of a fixed batch
    ours = loaded.classifier.predict_logits(x).double().numpy()
    padded = torch.cat([x, torch.zeros((1, *shape))])  # a fixed batch of 4: two batches
    theirs = np.concatenate([onnx_runtime(path, padded[i : i + 4].numpy()) for i in (0, 4)])[:7]
    with torch.no_grad():
        native = module(x).double().numpy()
    if name == "softmax":  # probabilities: modelsec reads their logarithms
        assert any("ends in a Softmax" in n for n in loaded.info.notes)
        theirs, native = np.log(theirs), np.log(native)
    np.testing.assert_allclose(ours, native, atol=1e-4)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_onnx_softmax_output_audits_on_its_log_probabilities(data: dict[str, Splits], tmp_path: Path) -> None:
    """A model ending in a Softmax: the audit's clean accuracy is the model's, and its logits are log-probabilities
    (a softmax of them gives the probabilities back, not a flattened softmax of probabilities)."""
    splits = data["digits"]
    module = model_zoo.trained("mlp", splits, epochs=3)
    probs = torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()
    path = model_zoo.export_onnx(probs, (64,), tmp_path / "p.onnx", opset=17, dynamic=True)
    loaded = load_model(path, input_shape=(64,), num_classes=10)
    x = torch.as_tensor(splits.nonmembers.x[:50])
    with torch.no_grad():
        torch.testing.assert_close(loaded.classifier.predict_logits(x), module(x).log_softmax(1), atol=1e-4, rtol=0)
    result = audit(path, splits, **QUICK)
    assert result.model.capability == "gradients"
    assert result.robustness is not None and result.robustness.clean_accuracy >= 0.8


# -- scikit-learn ---------------------------------------------------------------------------------------------------


def sklearn_zoo() -> dict[str, Any]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return {
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()),
        "hist-gradient-boosting": HistGradientBoostingClassifier(max_iter=10, random_state=0),
        "gradient-boosting": GradientBoostingClassifier(n_estimators=10, random_state=0),
        "k-neighbors": KNeighborsClassifier(),
        "svc-probability": SVC(probability=True, random_state=0),
        "svc-decision": SVC(),
        "calibrated": CalibratedClassifierCV(LogisticRegression(), cv=3),
        "random-forest": RandomForestClassifier(n_estimators=10, random_state=0),
    }


@pytest.mark.parametrize(
    "name",
    [
        "pipeline",
        "hist-gradient-boosting",
        "gradient-boosting",
        "k-neighbors",
        "svc-probability",
        "svc-decision",
        pytest.param("calibrated", marks=pytest.mark.slow),  # CalibratedClassifierCV: 3 models a query, ~7 s
        "random-forest",
    ],
)
def test_sklearn_zoo_matches_the_estimator_and_audits(name: str, data: dict[str, Splits], tmp_path: Path) -> None:
    sio = pytest.importorskip("skops.io")
    splits = data["breast-cancer"]
    estimator = sklearn_zoo()[name].fit(splits.members.x.astype(np.float64), splits.members.y)
    path = tmp_path / "m.skops"
    sio.dump(estimator, path)
    try:
        loaded = load_model(path, input_shape=(30,), num_classes=2)
    except UnsafeModelError as e:  # types skops does not trust by default (trees, calibrators): named, not loaded
        assert "does not trust by default" in str(e) and "--trust-model" in str(e)
        loaded = load_model(path, input_shape=(30,), num_classes=2, trust_model=True)
    x = splits.nonmembers.x[:40]
    ours = loaded.classifier.predict_logits(torch.as_tensor(x)).softmax(1).double().numpy()
    if hasattr(estimator, "predict_proba"):
        np.testing.assert_allclose(ours, estimator.predict_proba(x.astype(np.float64)), atol=1e-6)
    else:  # decision scores as logits: the binary score s is the logit difference
        s = estimator.decision_function(x.astype(np.float64))
        np.testing.assert_allclose(np.log(ours[:, 1] / ours[:, 0]), s, atol=1e-4)
    assert loaded.classifier.capability is Capability.SCORES
    result = audit(estimator, splits, **QUICK)
    assert result.robustness is not None and result.model.capability == "scores"
    assert result.robustness.clean_accuracy >= 0.7  # breast-cancer: every one of these is >= 0.9 accurate
    assert result.robustness.robust_accuracy["0.1"] <= result.robustness.clean_accuracy


def test_an_estimator_fitted_on_string_labels_is_refused_with_what_to_do(data: dict[str, Splits]) -> None:
    from sklearn.linear_model import LogisticRegression

    splits = data["breast-cancer"]
    labels = np.array(["benign", "malignant"])[splits.members.y]
    estimator = LogisticRegression().fit(splits.members.x, labels)
    with pytest.raises(ModelLoadError, match=r"classes_ \['benign', 'malignant'\] are not .*LabelEncoder"):
        audit(estimator, splits, **QUICK)


# -- scoring callables ----------------------------------------------------------------------------------------------

W = np.random.default_rng(0).normal(size=(30, 2))


def _probabilities(batch: np.ndarray) -> np.ndarray:
    z = batch @ W
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_callables_returning_lists_and_float64_audit_like_float32_arrays(data: dict[str, Splits]) -> None:
    splits = data["breast-cancer"]
    runs = {
        "float32": lambda b: _probabilities(b).astype(np.float32),
        "float64": lambda b: _probabilities(b).astype(np.float64),
        "list": lambda b: _probabilities(b).tolist(),
    }
    results = {k: audit(fn, splits, **QUICK) for k, fn in runs.items()}
    for r in results.values():
        assert r.model.format == "callable" and r.model.endpoint["capability"] == "scores"
    accuracies = {k: r.robustness.clean_accuracy for k, r in results.items() if r.robustness is not None}
    assert len(set(accuracies.values())) == 1, accuracies


def test_a_callable_returning_labels_is_refused_unless_declared(data: dict[str, Splits]) -> None:
    splits = data["breast-cancer"]

    def labels(batch: np.ndarray) -> np.ndarray:
        return _probabilities(batch).argmax(axis=1)

    with pytest.raises(EndpointError, match=r'One number per record: .*ScoreFunction\(fn, output="labels"\)'):
        audit(labels, splits, **QUICK)
    declared = audit(
        ScoreFunction(labels, output="labels"), splits, eps=(0.1,), samples=10, preset="quick", mia_samples=40
    )
    scores = audit(_probabilities, splits, eps=(0.1,), samples=10, preset="quick", mia_samples=40)
    assert declared.model.endpoint["capability"] == "labels"
    assert declared.robustness is not None and scores.robustness is not None
    assert declared.robustness.clean_accuracy == scores.robustness.clean_accuracy  # the same records, same argmax


def test_loading_a_keras_model_leaves_its_batch_normalization_statistics_alone(keras: Any) -> None:
    """The adapter probes the model once to count its classes; in training mode that probe moved the moving
    variance of every BatchNormalization layer towards the probe's (0.99 after one call), changing the model."""
    keras.utils.set_random_seed(0)
    model = model_zoo.keras_zoo(keras)["functional-cnn"][0]()
    bn = next(layer for layer in model.layers if type(layer).__name__ == "BatchNormalization")
    before = [w.copy() for w in bn.get_weights()]
    audit(model, model_zoo.as_images(load_splits("digits", seed=0), (1, 8, 8)), **QUICK)
    for a, b in zip(before, bn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
