"""The shadow-model attack (Shokri, Stronati, Song & Shmatikov 2017, "Membership Inference Attacks Against Machine
Learning Models").

Threat model: black-box with scores, plus data from the same distribution on which the attacker trains shadow models
of the same kind (modelsec's reference models, :mod:`modelsec.audits.reference_models`). The attacker knows which
records each shadow model trained on, so every (shadow model ``k``, record ``i``) pair is a labelled example of how a
model of this kind responds to a member (``inclusion[k, i]``) or a non-member. A binary attack classifier learns that
response from features of the shadow model's output (:func:`shadow_features`) and is then applied to the target's
output on each record; its log-odds are the membership score.

- Training pairs come only from records the shadow models could have trained on (those IN at least one of them:
  ``inclusion.any(0)``), with IN and OUT pairs balanced by subsampling, so both classes cover the same records and
  the classifier learns membership rather than which records are easy. With a single shadow model every such
  record is IN it, and the OUT pairs come from the records it did not train on.
- Online reference models (trained on the candidates too) and offline ones (the candidates OUT of every model,
  population records IN half of them) both work: the attack never needs a candidate's own IN models.
- Shokri et al. train one attack model per class of the true label (``per_class=True``); classes with fewer than
  ``min_class_examples`` pairs of either kind use the global model. The default is one global model, which the
  class-dependent features (the true-class log-odds) make nearly as strong and far less data-hungry.

Features are computed from the logits in float64 log space (:mod:`modelsec.attacks.membership.signals`), and the
default attack classifier is a logistic regression, whose log-odds are strictly monotone in them: a saturated target
(logits 60 vs 0, 70 vs 0) still gives every record a distinct score. ``model="gradient-boosting"`` (scikit-learn's
histogram gradient boosting) fits non-linear boundaries but bins its inputs, so records beyond the training range tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.membership.signals import Signal, entropy, log_softmax, scaled_logit
from modelsec.core.errors import ConfigError

MODELS = ("logistic", "gradient-boosting")


def shadow_features(logits: np.ndarray, labels: np.ndarray, *, top_k: int = 3) -> np.ndarray:
    """Attack-classifier features of a model's output, float64 ``(..., n, 2 + min(top_k, classes))``.

    Columns: the true-class log-odds ``log(p_y / (1 - p_y))`` (LiRA's scaled logit, exact where ``p_y`` rounds to
    1), the prediction's entropy, and the ``top_k`` largest log-probabilities in descending order. ``logits`` may
    have leading dimensions (one row per shadow model); ``labels`` broadcast over them.

    >>> f = shadow_features(np.array([[60.0, 0.0, 0.0], [70.0, 0.0, 0.0]]), np.array([0, 0]), top_k=2)
    >>> f.shape
    (2, 4)
    >>> f[:, 0].round(3).tolist(), f[:, 3].round(3).tolist()
    ([59.307, 69.307], [-60.0, -70.0])
    """
    if top_k < 1:
        raise ConfigError(f"shadow: top_k must be >= 1, got {top_k}")
    lp = log_softmax(logits)
    k = min(top_k, lp.shape[-1])
    top = -np.sort(-lp, axis=-1)[..., :k]
    return np.concatenate(
        [scaled_logit(logits, labels)[..., None], entropy(logits)[..., None], top],
        axis=-1,
    )


def _classifier(model: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier  # imported when used: scikit-learn is slow to import
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return HistGradientBoostingClassifier(max_iter=100, random_state=seed)


def _balanced(in_idx: np.ndarray, out_idx: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """As many IN as OUT indices (at most ``cap`` in all), drawn without replacement; IN first."""
    m = min(in_idx.size, out_idx.size)
    if cap is not None:
        m = min(m, cap // 2)
    return np.concatenate([rng.choice(in_idx, m, replace=False), rng.choice(out_idx, m, replace=False)])


def shadow_scores(
    target_features: np.ndarray,
    target_labels: np.ndarray,
    reference_features: np.ndarray,
    reference_labels: np.ndarray,
    inclusion: np.ndarray,
    *,
    model: str = "logistic",
    per_class: bool = False,
    min_class_examples: int = 50,
    max_examples: int | None = 100_000,
    seed: int = 0,
) -> np.ndarray:
    """Log-odds of membership for every target record ``(n,)``, from an attack classifier trained on the shadow
    models' features ``(models, n, f)`` labelled by ``inclusion`` ``(models, n)``. See the module docstring."""
    models, n = inclusion.shape
    eligible = inclusion.any(axis=0)
    if models == 1:
        eligible = np.ones(n, dtype=bool)  # one model: every record it could train on is IN it
    pair_in = inclusion[:, eligible].ravel()
    pair_x = reference_features[:, eligible].reshape(-1, reference_features.shape[-1])
    pair_y = np.broadcast_to(reference_labels[eligible], (models, int(eligible.sum()))).ravel()
    in_idx, out_idx = np.flatnonzero(pair_in), np.flatnonzero(~pair_in)
    if in_idx.size == 0 or out_idx.size == 0:
        raise ConfigError(
            f"shadow: the reference models give {in_idx.size} IN and {out_idx.size} OUT examples on the records they "
            "could have trained on; the attack classifier needs both (train more reference models on a larger pool)"
        )
    rng = np.random.default_rng(seed)

    def fit(rows: np.ndarray) -> Any:
        clf = _classifier(model, seed)
        clf.fit(pair_x[rows], pair_in[rows].astype(np.int64))
        return clf

    scores = np.asarray(fit(_balanced(in_idx, out_idx, max_examples, rng)).decision_function(target_features))
    if per_class:
        for c in np.unique(target_labels):
            of_c = pair_y == c
            c_in, c_out = in_idx[of_c[in_idx]], out_idx[of_c[out_idx]]
            if min(c_in.size, c_out.size) < min_class_examples:
                continue  # too few examples: the global model scores this class
            rows = target_labels == c
            scores[rows] = fit(_balanced(c_in, c_out, max_examples, rng)).decision_function(target_features[rows])
    return np.asarray(scores, dtype=np.float64)


@MEMBERSHIP_ATTACKS.register("shadow")
@dataclass(frozen=True, kw_only=True)
class ShadowModel(MembershipAttack):
    """Shokri et al.'s shadow-model attack over reference models' outputs (online or offline).

    Args:
        model: the attack classifier, ``"logistic"`` (standardised logistic regression) or ``"gradient-boosting"``.
        per_class: one attack classifier per true class, as in the paper (the global one where a class has fewer
            than ``min_class_examples`` IN or OUT pairs).
        min_class_examples: the fewest IN (and OUT) pairs a class needs for its own classifier.
        top_k: how many of the largest log-probabilities are features.
        max_examples: the most (model, record) pairs an attack classifier trains on (None = all).
        seed: seeds the subsampling and the attack classifier.
    """

    name = "shadow"
    signals = frozenset({Signal.TARGET_SCORES, Signal.REFERENCE})
    model: str = "logistic"
    per_class: bool = False
    min_class_examples: int = 50
    top_k: int = 3
    max_examples: int | None = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"{self.name}: model must be one of {MODELS}, got {self.model!r}")
        if self.min_class_examples < 1:
            raise ConfigError(f"{self.name}: min_class_examples must be >= 1, got {self.min_class_examples}")
        if self.top_k < 1:
            raise ConfigError(f"{self.name}: top_k must be >= 1, got {self.top_k}")
        if self.max_examples is not None and self.max_examples < 2:
            raise ConfigError(f"{self.name}: max_examples must be >= 2 or None, got {self.max_examples}")

    @property
    def label(self) -> str:
        return f"{self.name} (per-class)" if self.per_class else self.name

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        ref = inputs.reference
        assert ref is not None
        t = inputs.target
        return shadow_scores(
            shadow_features(t.logits, t.labels, top_k=self.top_k),
            np.asarray(t.labels),
            shadow_features(ref.logits, ref.labels, top_k=self.top_k),
            np.asarray(ref.labels),
            np.asarray(ref.inclusion, dtype=bool),
            model=self.model,
            per_class=self.per_class,
            min_class_examples=self.min_class_examples,
            max_examples=self.max_examples,
            seed=self.seed,
        )
