"""The members a membership attack exposes most: the records with the highest membership scores.

These are the training records whose membership the attack is most confident about: typically outliers, rare
classes or mislabelled examples ("Membership Inference Attacks From First Principles", Carlini et al. 2022, show
that privacy risk concentrates on few records). The audit lists them in ``PrivacyResult.exposed_records``;
:mod:`modelsec.outputs.exposed_records` writes them as ``exposed_records.csv``, and the HTML report shows
thumbnails when it is given the inputs.

>>> records = most_exposed(np.array([0.1, 2.5, 0.7, 2.5]), np.array([0, 1, 1, 2]), attack="lira", top=3)
>>> [(r.rank, r.member_index, r.label, r.score) for r in records]
[(1, 1, 1, 2.5), (2, 3, 2, 2.5), (3, 2, 1, 0.7)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelsec.results.audit import ExposedRecord


def most_exposed(
    member_scores: np.ndarray,
    labels: np.ndarray,
    *,
    attack: str,
    top: int = 20,
    class_names: Sequence[str] | None = None,
) -> list[ExposedRecord]:
    """The ``top`` members with the highest scores of ``attack``, highest first (fewer if there are fewer members).

    ``member_scores[i]`` and ``labels[i]`` belong to member ``i`` of the sample the attack scored (``(n,)`` each);
    ``member_index`` is that ``i`` (map it to the members split before storing it in a result, as the audit does).
    Equal scores are ranked by index, so the list is deterministic. ``class_names`` names the labels when given.
    """
    scores = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if y.shape != scores.shape:
        raise ValueError(f"labels has {y.size} entries, member_scores {scores.size}")
    if not np.isfinite(scores).all():
        raise ValueError("membership scores must be finite")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    order = np.lexsort((np.arange(scores.size), -scores))[:top]  # score descending, then index ascending
    return [
        ExposedRecord(
            rank=rank,
            member_index=int(i),
            label=int(y[i]),
            class_name=_class_name(int(y[i]), class_names),
            score=float(scores[i]),
            attack=attack,
        )
        for rank, i in enumerate(order, start=1)
    ]


def _class_name(label: int, class_names: Sequence[str] | None) -> str | None:
    if class_names is None or not 0 <= label < len(class_names):
        return None
    return str(class_names[label])
