"""The most exposed members: ranking, ties, class names, CSV, and the round trip through result.json."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from modelsec.audits.exposure import most_exposed
from modelsec.outputs.exposed_records import CSV_COLUMNS, write_exposed_csv
from modelsec.results.audit import AuditResult
from tests.report_fixtures import make_audit_result

NAMES = ["cat", "dog", "bird"]


def test_ranks_by_score_then_index() -> None:
    scores = np.array([0.5, 3.0, -1.0, 3.0, 0.5, 7.0])
    records = most_exposed(scores, np.array([0, 1, 2, 0, 1, 2]), attack="lira", top=5, class_names=NAMES)
    assert [r.member_index for r in records] == [5, 1, 3, 0, 4]
    assert [r.rank for r in records] == [1, 2, 3, 4, 5]
    assert [r.score for r in records] == [7.0, 3.0, 3.0, 0.5, 0.5]
    assert [r.class_name for r in records] == ["bird", "dog", "cat", "cat", "dog"]
    assert all(r.attack == "lira" for r in records)


def test_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 30, 500).astype(float)  # many ties
    labels = rng.integers(0, 3, 500)
    records = most_exposed(scores, labels, attack="rmia", top=40)
    expected = sorted(range(500), key=lambda i: (-scores[i], i))[:40]
    assert [r.member_index for r in records] == expected
    assert all(r.label == labels[r.member_index] and r.class_name is None for r in records)


def test_top_larger_than_the_sample_and_unknown_labels() -> None:
    records = most_exposed(np.array([1.0, 2.0]), np.array([1, 7]), attack="a", class_names=NAMES)
    assert [(r.member_index, r.class_name) for r in records] == [(1, None), (0, "dog")]


@pytest.mark.parametrize(
    ("scores", "labels", "top", "match"),
    [
        (np.array([1.0, 2.0]), np.array([0]), 5, "labels"),
        (np.array([1.0, np.nan]), np.array([0, 1]), 5, "finite"),
        (np.array([1.0, 2.0]), np.array([0, 1]), 0, "top"),
    ],
)
def test_rejects_bad_inputs(scores: np.ndarray, labels: np.ndarray, top: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        most_exposed(scores, labels, attack="a", top=top)


def test_csv(tmp_path: Path) -> None:
    records = most_exposed(np.array([0.1, 1 / 3, 0.2]), np.array([0, 2, 5]), attack="lira", class_names=NAMES)
    path = write_exposed_csv(tmp_path / "exposed.csv", records)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0] == {
        "rank": "1",
        "member_index": "1",
        "label": "2",
        "class_name": "bird",
        "score": repr(1 / 3),
        "attack": "lira",
    }
    assert float(rows[0]["score"]) == 1 / 3  # full precision
    assert [r["class_name"] for r in rows] == ["bird", "", "cat"]  # label 5 has no name
    assert write_exposed_csv(tmp_path / "empty.csv", []).read_text(encoding="utf-8").strip() == ",".join(CSV_COLUMNS)


def test_records_round_trip_through_result_json() -> None:
    base = make_audit_result()
    assert base.privacy is not None
    records = most_exposed(np.array([0.4, 0.9]), np.array([3, 1]), attack="lira", class_names=["a", "b", "c", "d"])
    result = dataclasses.replace(base, privacy=dataclasses.replace(base.privacy, exposed_records=records))
    back = AuditResult.from_dict(json.loads(result.to_json()))
    assert back.privacy is not None and back.privacy.exposed_records == records
