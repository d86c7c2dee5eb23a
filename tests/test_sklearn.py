"""The scikit-learn adapter (models/adapters/sklearn.py) and the estimator's reference-model recipe.

- logits: the classifier returns exactly what the estimator says (log predict_proba, decision scores, labels);
- safety: skops's untrusted types and every pickle (plain, joblib, compressed) are refused without --trust-model,
  with canaries proving nothing ran; with it, estimators load;
- reference models: clones of the estimator, refitted, reproducible, the same in worker processes;
- the audit: a .skops estimator through the CLI, gradient attacks skipped with a reason, Square under quick, and
  LiRA / RMIA on clones.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from modelsec.audits.membership import plan_membership_attacks
from modelsec.audits.presets import build_attacks, preset_specs
from modelsec.audits.reference_models import membership_matrix, train_reference_models
from modelsec.cli.main import main
from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError
from modelsec.data.dataset import Dataset
from modelsec.models import Capability, load_model
from modelsec.models.adapters import LoadRequest, wrap_object
from modelsec.models.adapters.sklearn import EstimatorRecipe, class_columns
from modelsec.models.formats import ModelFormat, detect_format, pickled_class
from modelsec.models.output import LOG_FLOOR


def blobs(n: int, seed: int, classes: int = 3, features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, features)) * 0.15 + 0.3 + 0.15 * y[:, None]).clip(0, 1).astype(np.float32)
    return x, y


def fitted(estimator: Any, classes: int = 3) -> Any:
    x, y = blobs(150, 0, classes)
    return estimator.fit(x, y)


def wrapped(estimator: Any, classes: int = 3, features: int = 6) -> Any:
    request = LoadRequest(input_shape=(features,), num_classes=classes, bounds=(0.0, 1.0))
    loaded = wrap_object(estimator, request)
    assert loaded is not None
    return loaded


# -- logits ---------------------------------------------------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(max_iter=500),
        RandomForestClassifier(n_estimators=5, random_state=0),
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ],
    ids=["logistic", "forest", "mlp", "pipeline"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_logits_are_the_log_of_predict_proba(estimator: Any) -> None:
    est = fitted(estimator)
    loaded = wrapped(est)
    clf = loaded.classifier
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    logits = clf.predict_logits(x)
    want = np.log(np.clip(est.predict_proba(x.numpy().astype(np.float64)), 1e-12, None))
    assert logits.dtype == torch.float32 and not logits.requires_grad
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-6, atol=1e-6)
    assert clf.capability is Capability.SCORES and clf.queries == 40
    assert clf.predict(x).tolist() == est.predict(x.numpy()).tolist()
    assert "predict_proba" in (loaded.info.arch or "") and loaded.info.format == "python"


@pytest.mark.numerics
def test_an_svc_without_probabilities_gives_its_decision_scores_as_logits() -> None:
    est = fitted(SVC())
    clf = wrapped(est).classifier
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(clf.predict_logits(x).numpy(), est.decision_function(x.numpy()), rtol=1e-5, atol=1e-6)
    assert clf.capability is Capability.SCORES
    assert clf.predict(x).tolist() == est.predict(x.numpy()).tolist()

    binary = fitted(SVC(), classes=2)
    s = binary.decision_function(x.numpy())
    logits = wrapped(binary, classes=2).classifier.predict_logits(x).numpy()
    np.testing.assert_allclose(logits, np.stack([-s / 2, s / 2], axis=1), rtol=1e-5, atol=1e-6)
    # a softmax of these is the sigmoid of the score: for a logistic regression, its own probabilities
    lr = fitted(LogisticRegression(), classes=2)
    x64 = x.numpy().astype(np.float64)
    s = lr.decision_function(x64)
    from_scores = torch.softmax(torch.as_tensor(np.stack([-s / 2, s / 2], axis=1)), dim=1)
    np.testing.assert_allclose(from_scores.numpy(), lr.predict_proba(x64), rtol=1e-9)


class Nearest(ClassifierMixin, BaseEstimator):
    """A labels-only classifier: the class of the nearest training record (no scores at all)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Nearest:
        self.x_, self.y_, self.classes_ = np.asarray(x), np.asarray(y), np.unique(y)
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = ((np.asarray(x)[:, None, :] - self.x_[None]) ** 2).sum(-1)
        return self.y_[d.argmin(1)]


def test_a_labels_only_estimator_is_a_labels_model() -> None:
    est = fitted(Nearest())
    clf = wrapped(est).classifier
    x = torch.rand(20, 6, generator=torch.Generator().manual_seed(3))
    logits = clf.predict_logits(x)
    assert clf.capability is Capability.LABELS
    assert clf.predict(x).tolist() == est.predict(x.numpy()).tolist()
    assert set(np.unique(logits.numpy()).tolist()) == {0.0, float(np.float32(LOG_FLOOR))}


def test_class_labels_map_to_the_data_or_are_refused() -> None:
    assert class_columns(np.array([0, 2]), 3)[0].tolist() == [0, 2]
    assert class_columns(np.array([0.0, 1.0]), None)[1] == 2
    for labels in (np.array(["cat", "dog"]), np.array([-1, 1]), np.array([0, 3])):
        with pytest.raises(ModelLoadError, match="LabelEncoder"):
            class_columns(labels, 3)
    # an estimator that never saw class 1: its column gets the floor, the others its probabilities
    x, y = blobs(150, 0)
    keep = y != 1
    est = LogisticRegression().fit(x[keep], y[keep])
    logits = wrapped(est).classifier.predict_logits(torch.as_tensor(x[:5])).numpy()
    assert np.all(logits[:, 1] == np.float32(LOG_FLOOR))
    np.testing.assert_allclose(np.exp(logits[:, [0, 2]]), est.predict_proba(x[:5]), rtol=1e-6)
    with pytest.raises(ModelLoadError, match="LabelEncoder"):
        wrapped(LogisticRegression().fit(x, np.array(["a", "b", "c"])[y]))


def test_user_errors_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        wrapped(LogisticRegression())
    with pytest.raises(ModelLoadError, match="takes 6 features but the data's records have 64"):
        wrapped(fitted(LogisticRegression()), features=64)
    with pytest.raises(ModelLoadError, match="not a scikit-learn classifier"):
        wrapped(StandardScaler().fit(blobs(20, 0)[0]))
    assert wrap_object(torch.nn.Linear(2, 2), LoadRequest()) is None  # a module is not an estimator


# -- files: skops and pickles ---------------------------------------------------------------------------------


class Canary(LogisticRegression):
    """A logistic regression whose construction from a file writes the file named by its ``canary`` attribute: the
    proof that loading ran code of the file's types."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["canary"]).write_text("ran")
        super().__setstate__(state)


class CreatesFile:
    """Unpickling this creates a file: the canonical malicious pickle."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.target, "w"))


def test_a_skops_file_loads_and_untrusted_types_are_refused(tmp_path: Path) -> None:
    est = fitted(LogisticRegression())
    path = tmp_path / "lr.skops"
    sio.dump(est, path)
    assert detect_format(path) is ModelFormat.SKOPS
    loaded = load_model(path, input_shape=(6,), num_classes=3)
    x = torch.rand(10, 6, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(loaded.classifier.predict_logits(x).exp().numpy(), est.predict_proba(x.numpy()), 1e-6)
    assert loaded.info.format == "skops" and isinstance(loaded.reference_recipe, EstimatorRecipe)

    canary = tmp_path / "ran"
    evil = fitted(Canary())
    evil.canary = str(canary)
    evil_path = tmp_path / "canary.skops"
    sio.dump(evil, evil_path)
    with pytest.raises(UnsafeModelError, match=r"tests\.test_sklearn\.Canary.*--trust-model"):
        load_model(evil_path, input_shape=(6,), num_classes=3)
    assert not canary.exists()
    trusted = load_model(evil_path, input_shape=(6,), num_classes=3, trust_model=True)  # trust means: run it
    assert canary.exists() and type(trusted.classifier.module.estimator).__name__ == "Canary"


def test_scikit_learns_own_untrusted_skops_types_need_trust(tmp_path: Path) -> None:
    est = fitted(RandomForestClassifier(n_estimators=3, random_state=0))
    path = tmp_path / "forest.skops"
    sio.dump(est, path)
    with pytest.raises(UnsafeModelError, match=r"sklearn\.tree\._tree\.Tree"):
        load_model(path, input_shape=(6,), num_classes=3)
    clf = load_model(path, input_shape=(6,), num_classes=3, trust_model=True).classifier
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(5))
    assert clf.predict(x).tolist() == est.predict(x.numpy()).tolist()


def _dumps(obj: Any, path: Path, how: str) -> None:
    if how == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        joblib.dump(obj, path, compress={"joblib": 0, "joblib-zlib": ("zlib", 3), "joblib-xz": ("xz", 3)}[how])


HOW = ["pickle", "joblib", "joblib-zlib", "joblib-xz"]


@pytest.mark.parametrize("how", HOW)
def test_a_pickled_estimator_is_refused_without_trust_and_loads_with_it(tmp_path: Path, how: str) -> None:
    est = fitted(LogisticRegression())
    path = tmp_path / "lr.model"
    _dumps(est, path, how)
    fmt = detect_format(path)
    assert fmt is (ModelFormat.PICKLE if how in ("pickle", "joblib") else ModelFormat.COMPRESSED_PICKLE)
    assert pickled_class(path, fmt) == "sklearn.linear_model._logistic.LogisticRegression"
    with pytest.raises(UnsafeModelError, match=r"--trust-model.*skops"):
        load_model(path, input_shape=(6,), num_classes=3)
    loaded = load_model(path, input_shape=(6,), num_classes=3, trust_model=True)
    x = torch.rand(10, 6, generator=torch.Generator().manual_seed(6))
    np.testing.assert_allclose(loaded.classifier.predict_logits(x).exp().numpy(), est.predict_proba(x.numpy()), 1e-6)
    assert loaded.info.format == fmt.value and isinstance(loaded.reference_recipe, EstimatorRecipe)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("trust", [False, True])
def test_a_malicious_pickle_never_runs(tmp_path: Path, how: str, trust: bool) -> None:
    """Without --trust-model nothing is unpickled; with it, a pickle whose top-level object is not an estimator
    still goes to the weights-only loader (or, compressed, is refused), so the payload never runs either way."""
    canary = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    _dumps(CreatesFile(canary), path, how)
    with pytest.raises((UnsafeModelError, ModelLoadError)):
        load_model(path, arch="mlp", input_shape=(6,), num_classes=3, trust_model=trust)
    assert not canary.exists()


def test_cli_refuses_a_joblib_estimator_without_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    canary = tmp_path / "pwned"
    path = tmp_path / "model.joblib"
    joblib.dump([fitted(LogisticRegression()), CreatesFile(canary)], path)
    with pytest.raises(SystemExit) as e:
        main(["audit", "--model", str(path), "--data", "breast-cancer", "--no-store", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--trust-model" in capsys.readouterr().err
    assert not canary.exists() and not (tmp_path / "o").exists()


# -- reference models -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_estimator_recipe_is_clones_refitted_reproducibly() -> None:
    est = fitted(make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=7)))
    recipe = EstimatorRecipe(estimator=est)
    model = recipe.reference_model(11)
    assert not hasattr(model, "classes_")  # a clone: no fitted state
    params, want = model.get_params(deep=True), est.get_params(deep=True)
    assert params["mlpclassifier__random_state"] == 11
    same = {k for k in want if not k.endswith("random_state") and not hasattr(want[k], "fit") and k != "steps"}
    assert same and all(params[k] == want[k] for k in same)  # every other hyper-parameter is the target's

    x, y = blobs(120, 1)
    pool = blobs(50, 2)[0]
    a = recipe.train_logits(x, y, pool, num_classes=3, bounds=(0.0, 1.0), seed=11)
    b = recipe.train_logits(x, y, pool, num_classes=3, bounds=(0.0, 1.0), seed=11)
    c = recipe.train_logits(x, y, pool, num_classes=3, bounds=(0.0, 1.0), seed=12)
    assert a.shape == (50, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # the same seed, the same model
    assert not np.array_equal(a, c)  # the seed is the MLP's initialisation
    refit = recipe.reference_model(11).fit(x.astype(np.float64), y)
    np.testing.assert_allclose(np.exp(a), refit.predict_proba(pool.astype(np.float64)), rtol=1e-5)

    described = recipe.describe()
    assert json.loads(json.dumps(described)) == described == EstimatorRecipe(estimator=est).describe()
    assert described["estimator"] == "sklearn.pipeline.Pipeline" and not recipe.guessed
    assert "clone" in recipe.summary()["recipe"]


def test_estimator_reference_models_are_the_same_in_worker_processes() -> None:
    x, y = blobs(100, 3)
    pool = Dataset("blobs", x, y, 3, (0.0, 1.0))
    inclusion = membership_matrix(2, np.ones(100, dtype=bool), np.random.default_rng(0))
    recipe = EstimatorRecipe(estimator=fitted(RandomForestClassifier(n_estimators=4)))
    here = train_reference_models(pool, inclusion, recipe=recipe, seed=3, workers=1)
    there = train_reference_models(pool, inclusion, recipe=recipe, seed=3, workers=2)
    np.testing.assert_array_equal(here.signals.logits, there.signals.logits)
    assert here.compute()["estimator"] == "sklearn.ensemble._forest.RandomForestClassifier"


# -- the audit ------------------------------------------------------------------------------------------------


def test_a_scores_only_model_gets_square_with_the_presets_budget() -> None:
    clf = wrapped(fitted(LogisticRegression())).classifier
    attacks, skipped = build_attacks(preset_specs("quick"), clf, "linf", preset="quick")
    assert [(a.name, a.params()["max_queries"]) for a in attacks] == [("square", 1000)]
    assert {s.attack: s.reason for s in skipped} == {
        "apgd": "needs gradients; the model offers only scores",
        "fgsm": "needs gradients; the model offers only scores",
    }
    attacks, _ = build_attacks(preset_specs("quick"), clf, "linf")  # not the preset's own plan: the defaults
    assert attacks[0].params()["max_queries"] == 5000
    chosen, notes = plan_membership_attacks(None, clf.capability, None)
    assert {a.name for a in chosen} >= {"loss-threshold", "confidence"}  # every membership attack that needs scores
    assert notes and all("needs reference models" in n for n in notes)  # what is left out, only for that


def test_cli_audit_of_a_skops_estimator(tmp_path: Path) -> None:
    from modelsec.data import load_splits

    splits = load_splits("breast-cancer", seed=0)
    est = LogisticRegression(C=100.0, max_iter=1000).fit(splits.members.x, splits.members.y)
    path = tmp_path / "lr.skops"
    sio.dump(est, path)
    out = tmp_path / "out"
    main(["audit", "--model", str(path), "--data", "breast-cancer", "--reference-models", "4", "--preset", "quick",
          "--samples", "50", "--mia-samples", "100", "--eps", "0.1", "--workers", "1", "--no-store", "--quiet",
          "--out", str(out)])  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    assert result["model"]["format"] == "skops" and "LogisticRegression" in result["model"]["arch"]
    rob, priv = result["robustness"], result["privacy"]
    assert {s["attack"] for s in rob["skipped"]} == {"apgd", "fgsm"}
    assert all("needs gradients" in s["reason"] for s in rob["skipped"])
    assert [r["attack"] for r in rob["results"]] == ["square"]
    assert rob["robust_accuracy"]["0.1"] < rob["clean_accuracy"]
    attacks = {a["attack"] for a in priv["attacks"]}
    assert {"lira", "rmia", "shadow", "loss-threshold"} <= attacks
    compute = priv["compute"]
    assert compute["estimator"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert "clone" in compute["recipe"] and compute["reference_models"] == 4 and "arch" not in compute


def test_the_audit_uses_the_models_own_recipe_and_marks_a_guessed_one() -> None:
    from torch import nn

    from modelsec.audits.reference_choice import choose_recipe
    from modelsec.audits.reference_models import BuiltinRecipe
    from modelsec.audits.runner import AuditConfig
    from modelsec.models.adapters import LoadRequest
    from modelsec.models.card import ModelCard
    from modelsec.models.reference_recipe import ReferenceRecipe
    from modelsec.results.audit import ModelInfo

    def choose(
        arch: str | None, card: ModelCard, config: AuditConfig, own: EstimatorRecipe | None = None
    ) -> tuple[ReferenceRecipe, list[str]]:
        info = ModelInfo(path=None, sha256=None, arch=arch, format="python", num_classes=3, input_shape=[6])
        return choose_recipe(
            arch_option=config.reference_arch, overrides=config.reference_overrides(), info=info, card=card,
            own=own, module=nn.Identity(), request=LoadRequest(),
        )  # fmt: skip

    own = EstimatorRecipe(estimator=LogisticRegression())
    recipe, notes = choose("x", ModelCard(), AuditConfig(reference_epochs=3), own)
    assert recipe is own and len(notes) == 1
    assert notes[0].startswith(
        "--reference-epochs does not apply to this model's reference models: they follow its own"
    )

    recorded = ModelCard.from_header({"arch": "mlp", "training": {"config": {"epochs": 4}}}, source="m")
    recipe, _ = choose("mlp", recorded, AuditConfig())
    assert isinstance(recipe, BuiltinRecipe) and recipe.training.epochs == 4
    assert recipe.guessed  # the recorded recipe names the epochs only: its learning rate and batch size are guesses

    recipe, _ = choose(None, ModelCard(), AuditConfig())
    assert isinstance(recipe, BuiltinRecipe) and recipe.guessed and recipe.arch == "mlp"
    assert any("modelsec's defaults" in g for g in recipe.guesses) and "--reference-epochs" in recipe.how_to_set
    assert recipe.record()["guessed"] and recipe.record()["how_to_set"] == recipe.how_to_set
