"""Fitted scikit-learn classifiers as score-based (black-box) :class:`~modelsec.models.Classifier` s, and their
reference-model recipe: clones of the estimator, refitted.

**Files.** A ``.skops`` file (``skops.io.dump``) is checked with skops's trusted-type check
(``skops.io.get_untrusted_types``) before anything in it is built: a type that skops does not trust by default (a
custom class, and some of scikit-learn's own, such as a random forest's ``Tree``) is refused
(:class:`~modelsec.core.errors.UnsafeModelError`, naming the types) unless ``--trust-model``, which then trusts
exactly those types. A pickle (``pickle.dump``, ``joblib.dump``, compressed or not) can run any code when loaded:
modelsec refuses it before a byte is unpickled unless ``--trust-model``, and with it loads it here (in full, with
``joblib.load``) only when its top-level object is of a scikit-learn class
(:func:`~modelsec.models.formats.pickled_class`, read without unpickling; other pickles stay with the torch loader's
``weights_only=True``). ``--trust-model`` on an estimator pickle therefore means: run whatever the file holds.

**Objects.** :func:`wraps` accepts a scikit-learn object or a subclass of one (by module name, without importing
scikit-learn), or any object with ``fit`` and ``predict_proba`` or ``decision_function``:
``modelsec.audit(model=estimator)``.

**What the model gives an attacker.** The classifier's module runs the estimator on the records flattened to
``(n, features)`` (float64), without gradients, and returns float32 logits:

=========================  ==================================================  =========================================
the estimator has          logits                                              :class:`~modelsec.models.Capability`
=========================  ==================================================  =========================================
``predict_proba``          ``log(max(p, 1e-12))``: a softmax gives back ``p``  SCORES
``decision_function``      the decision scores as logits (binary: ``[-s/2,      SCORES
                           s/2]``, so that a softmax is ``sigmoid(s)``); not
                           calibrated probabilities
``predict`` only           0 on the predicted label, ``log(1e-12)`` elsewhere  LABELS
=========================  ==================================================  =========================================

Score-based means that the gradient attacks are skipped (with the reason in the report) and the score-based
(Square) and decision-based (HopSkipJump) attacks run, as every membership attack does.

**Classes.** The estimator's ``classes_`` must be the data's labels (integers in ``0..K-1``; a subset is fine: a
class it never saw gets the floor probability); any other labels (strings, -1/+1) are refused with what to do.

**Reference models.** :class:`EstimatorRecipe` is the estimator's exact training recipe for LiRA, RMIA and the
shadow-model attack: ``sklearn.base.clone`` of it (same hyper-parameters, no fitted state) refitted on each
reference model's records, with every ``random_state`` set to that model's seed, so the reference models are
reproducible. It rides on the :class:`~modelsec.models.loading.LoadedModel` (``reference_recipe``).
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError
from modelsec.models.base import Capability, Classifier
from modelsec.models.formats import ModelFormat
from modelsec.models.output import LOG_FLOOR, PROBABILITY_FLOOR
from modelsec.models.reference_recipe import ReferenceRecipe
from modelsec.results.audit import ModelInfo

if TYPE_CHECKING:
    from modelsec.models.adapters import LoadRequest
    from modelsec.models.loading import LoadedModel

EXTRA = "pip install 'modelsec[sklearn]'"

UNSEEN_CLASS_MARGIN = 30.0
"""With decision scores as logits, a class the estimator never saw scores this far below the lowest class it did
(a softmax gives it less than 1e-13 of the probability of that class)."""


def _import_sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise ConfigError(f"scikit-learn models need scikit-learn: {EXTRA}") from None
    return sklearn


# -- the scores ---------------------------------------------------------------------------------------------------


def scoring_method(estimator: Any) -> str:
    """How modelsec reads the estimator's scores: ``"predict_proba"``, else ``"decision_function"``, else
    ``"predict"`` (labels only)."""
    for method in ("predict_proba", "decision_function"):
        if hasattr(
            estimator, method
        ):  # scikit-learn hides a method the fitted estimator lacks (SVC without probability)
            return method
    return "predict"


def class_columns(classes: Any, num_classes: int | None) -> tuple[np.ndarray, int]:
    """The logit column of each of the estimator's ``classes_`` and the number of classes (``num_classes``, else one
    more than its largest label). :class:`ModelLoadError` when they are not labels ``0..num_classes-1``.

    >>> class_columns(np.array([0, 1, 3]), 5)
    (array([0, 1, 3]), 5)
    """
    labels = np.asarray(classes)
    integral = labels.dtype.kind in "iub" or (
        labels.dtype.kind == "f" and bool(np.all(np.isfinite(labels))) and bool(np.all(labels == np.round(labels)))
    )
    k = num_classes
    if integral and labels.size:
        columns = labels.astype(np.int64)
        k = k or int(columns.max()) + 1
        if columns.min() >= 0 and columns.max() < k and np.unique(columns).size == columns.size:
            return columns, k
    shown = ", ".join(repr(v) for v in labels.tolist()[:10]) + (", ..." if labels.size > 10 else "")
    wanted = f"0..{k - 1}" if k else "0..K-1"
    raise ModelLoadError(
        f"the estimator's classes_ [{shown}] are not the data's class labels {wanted}; refit it on the labels "
        f"{wanted} (for example through sklearn.preprocessing.LabelEncoder) and save it again"
    )


def estimator_logits(
    estimator: Any, x: np.ndarray, *, columns: np.ndarray, num_classes: int, scoring: str
) -> np.ndarray:
    """The logits modelsec reads from a fitted estimator on records ``x`` (any shape ``(n, ...)``, flattened to
    features, float64): float32 ``(n, num_classes)``, see the module docstring."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n = flat.shape[0]
    if n == 0:
        return np.zeros((0, num_classes), dtype=np.float32)
    with warnings.catch_warnings():  # an estimator fitted on a DataFrame warns on every array
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        if scoring == "predict_proba":
            proba = np.asarray(estimator.predict_proba(flat), dtype=np.float64)
            out = np.full((n, num_classes), LOG_FLOOR)
            out[:, columns] = np.log(np.clip(proba, PROBABILITY_FLOOR, None))
        elif scoring == "decision_function":
            scores = np.asarray(estimator.decision_function(flat), dtype=np.float64)
            if scores.ndim == 1:  # binary: the score of classes_[1]
                scores = np.stack([-scores / 2, scores / 2], axis=1)
            if scores.shape != (n, columns.size):
                raise ModelLoadError(
                    f"the estimator's decision_function returns {scores.shape[1:]} scores per record for "
                    f"{columns.size} classes (one-vs-one?); modelsec reads one score per class "
                    "(decision_function_shape='ovr')"
                )
            out = np.broadcast_to(scores.min(axis=1, keepdims=True) - UNSEEN_CLASS_MARGIN, (n, num_classes)).copy()
            out[:, columns] = scores
        else:
            labels = np.asarray(estimator.predict(flat))
            position = np.searchsorted(np.asarray(estimator.classes_), labels)  # classes_ is sorted
            out = np.full((n, num_classes), LOG_FLOOR)
            out[np.arange(n), columns[position]] = 0.0
    return out.astype(np.float32)


class EstimatorModule(nn.Module):
    """A fitted estimator as a module: records in, :func:`estimator_logits` out (on the inputs' device), no
    gradients (the estimator runs in NumPy)."""

    def __init__(self, estimator: Any, *, columns: np.ndarray, num_classes: int, scoring: str) -> None:
        super().__init__()
        self.estimator = estimator
        self.columns = columns
        self.num_classes = num_classes
        self.scoring = scoring

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = estimator_logits(
            self.estimator,
            x.detach().cpu().numpy(),
            columns=self.columns,
            num_classes=self.num_classes,
            scoring=self.scoring,
        )
        return torch.from_numpy(logits).to(x.device)


# -- the reference models' recipe ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as plain JSON values that stay the same from run to run (estimators as their class and
    parameters, functions by name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "get_params") and not isinstance(value, type):
        return {"class": _class_name(value), "params": _plain(value.get_params(deep=False))}
    if isinstance(value, np.ndarray):
        return {"array": value.tolist()} if value.size <= 100 else {"array_sha256": _digest(value.tobytes())}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value)


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, kw_only=True)
class EstimatorRecipe(ReferenceRecipe):
    """Reference models that are ``sklearn.base.clone`` s of ``estimator`` (its hyper-parameters, none of its fitted
    state), each fitted on its records with every ``random_state`` parameter (nested ones too, as in a pipeline)
    set to its seed: the target's own recipe, exactly, and reproducible.

    Args:
        estimator: the target estimator (fitted or not; only its parameters are used).
    """

    estimator: Any

    def reference_model(self, seed: int) -> Any:
        """The unfitted reference model of ``seed``: a clone with every ``random_state`` set to ``seed``."""
        from sklearn.base import clone

        model = clone(self.estimator)
        seeds = {
            k: int(seed) for k in model.get_params(deep=True) if k == "random_state" or k.endswith("__random_state")
        }
        return model.set_params(**seeds) if seeds else model

    def describe(self) -> dict[str, Any]:
        sklearn = _import_sklearn()
        return {
            "estimator": _class_name(self.estimator),
            "params": _plain(self.estimator.get_params(deep=False)),
            "scikit-learn": sklearn.__version__,
        }

    def summary(self) -> dict[str, Any]:
        name = type(self.estimator).__name__
        return {
            "recipe": f"sklearn.base.clone of the target {name}, refitted on each reference model's records "
            "(random_state = the model's seed)",
            "estimator": _class_name(self.estimator),
        }

    def train_logits(
        self,
        x_in: np.ndarray,
        y_in: np.ndarray,
        x_pool: np.ndarray,
        *,
        num_classes: int,
        bounds: tuple[float, float],
        seed: int,
    ) -> np.ndarray:
        model = self.reference_model(seed)
        model.fit(np.asarray(x_in, dtype=np.float64).reshape(len(x_in), -1), np.asarray(y_in, dtype=np.int64))
        columns, _ = class_columns(model.classes_, num_classes)
        return estimator_logits(model, x_pool, columns=columns, num_classes=num_classes, scoring=scoring_method(model))


# -- the adapter contract -----------------------------------------------------------------------------------------


def wraps(obj: Any) -> bool:
    """Whether ``obj`` is a scikit-learn object (by the modules of its type and its bases: scikit-learn is not
    imported) or an object with the estimator interface (``fit`` and ``predict_proba`` or ``decision_function``)."""
    if isinstance(obj, (type, nn.Module)):
        return False
    if any((getattr(c, "__module__", None) or "").split(".")[0] == "sklearn" for c in type(obj).__mro__):
        return True  # scikit-learn's own classes and the user's subclasses of BaseEstimator
    return callable(getattr(obj, "fit", None)) and (
        callable(getattr(obj, "predict_proba", None)) or callable(getattr(obj, "decision_function", None))
    )


def wrap(obj: Any, request: LoadRequest) -> LoadedModel:
    """A fitted estimator object as a classifier (its recipe: :class:`EstimatorRecipe`)."""
    try:
        digest: str | None = _digest(pickle.dumps(obj))  # pickling (not unpickling) names this estimator's state
    except Exception:  # an estimator holding something that does not pickle (a lambda): no fingerprint
        digest = None
    return _loaded(obj, request, path=None, fmt="python", sha256=digest)


def load(path: Path, fmt: ModelFormat, request: LoadRequest) -> LoadedModel:
    """A ``.skops`` file after skops's trusted-type check, or (only with ``request.trust_model``) a pickled
    estimator, unpickled in full."""
    from modelsec.models.loading import sha256_file

    if fmt is ModelFormat.SKOPS:
        estimator = _read_skops(path, trust_model=request.trust_model)
    elif fmt in (ModelFormat.PICKLE, ModelFormat.COMPRESSED_PICKLE):
        estimator = _read_pickled_estimator(path, trust_model=request.trust_model)
    else:
        raise ConfigError(f"the scikit-learn adapter does not read {fmt.value} files")
    return _loaded(estimator, request, path=path, fmt=fmt.value, sha256=sha256_file(path))


def _read_skops(path: Path, *, trust_model: bool) -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise ConfigError(f".skops files need skops: {EXTRA}") from None
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as e:  # a corrupt archive or schema: nothing was built
        raise ModelLoadError(f"cannot read the skops file {str(path)!r}: {e}") from None
    if untrusted and not trust_model:
        raise UnsafeModelError(
            f"{str(path)!r} holds types that skops does not trust by default: {', '.join(untrusted)}. Loading them "
            "runs their code, so the file was not loaded; pass --trust-model if you trust its author (modelsec then "
            "trusts exactly these types)"
        )
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as e:
        raise ModelLoadError(f"skops could not load {str(path)!r}: {e}") from None


def _read_pickled_estimator(path: Path, *, trust_model: bool) -> Any:
    if not trust_model:  # the safe-loading policy refused it before; never unpickle without trust
        raise UnsafeModelError(f"{str(path)!r} is a pickle; pass --trust-model if you trust its author")
    try:
        import joblib
    except ImportError:
        raise ConfigError(f"pickled estimators need joblib (scikit-learn's dependency): {EXTRA}") from None
    try:
        return joblib.load(path)  # the user trusts the file: full unpickling (plain pickles and joblib's alike)
    except Exception as e:
        raise ModelLoadError(f"cannot unpickle the estimator in {str(path)!r}: {type(e).__name__}: {e}") from None


def _loaded(estimator: Any, request: LoadRequest, *, path: Path | None, fmt: str, sha256: str | None) -> LoadedModel:
    from modelsec.models.loading import LoadedModel

    _import_sklearn()
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    name = type(estimator).__name__
    if not wraps(estimator) or not hasattr(estimator, "predict"):
        raise ModelLoadError(f"{str(path) if path else 'the object'} holds a {name}, not a scikit-learn classifier")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise ConfigError(f"the {name} is not fitted; fit it before auditing it") from None
    except TypeError:  # not an estimator check_is_fitted knows; classes_ below decides
        pass
    if not hasattr(estimator, "classes_"):
        raise ModelLoadError(f"the {name} has no classes_: modelsec audits classifiers")
    columns, num_classes = class_columns(estimator.classes_, request.num_classes)
    features = getattr(estimator, "n_features_in_", None)
    shape = tuple(request.input_shape) if request.input_shape else ((int(features),) if features else None)
    if shape is None:
        raise ConfigError("the input shape is unknown; pass --data")
    if features is not None and int(np.prod(shape)) != int(features):
        raise ModelLoadError(
            f"the {name} takes {features} features but the data's records have {int(np.prod(shape))} "
            f"(shape {shape}); check --data"
        )
    scoring = scoring_method(estimator)
    module = EstimatorModule(estimator, columns=columns, num_classes=num_classes, scoring=scoring)
    module(torch.zeros((1, *shape)))  # fails here, not mid-audit, when the estimator cannot score a record
    capability = Capability.LABELS if scoring == "predict" else Capability.SCORES
    classifier = Classifier(
        module,
        input_shape=shape,
        num_classes=num_classes,
        bounds=request.bounds or (0.0, 1.0),
        capability=capability,
        device=request.device,
        name=name,
    )
    reads = {"predict_proba": "scores: predict_proba", "decision_function": "scores: decision_function as logits"}
    info = ModelInfo(
        path=None if path is None else str(path),
        sha256=sha256,
        arch=f"scikit-learn {name} ({reads.get(scoring, 'labels only: predict')})",
        format=fmt,
        num_classes=num_classes,
        input_shape=list(shape),
        parameters=None,
    )
    return LoadedModel(classifier=classifier, info=info, reference_recipe=EstimatorRecipe(estimator=estimator))
