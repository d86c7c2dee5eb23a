"""The DP audit's runs (issue 14): ``--runs N`` independent one-run audits on the executor. Run 0 of any audit is
today's one-run audit; run i does not depend on N nor on where it ran (this process, two local processes, Ray);
the combined bound is the largest of the runs' bounds, each at beta / N (Bonferroni over the runs); the file of
one run is exactly as before, that of several validates against the dp_audit schema; the CLI's exit code follows
the combined bound. Digits, a 1-epoch MLP, 40 canaries: each run trains in well under a second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

from modelsec.audits import dp_audit
from modelsec.audits.dp_audit import (
    AuditTraining,
    combine_runs,
    defense_trainer,
    one_run_audit,
    run_dp_audit,
    run_seed,
)
from modelsec.core.errors import ConfigError
from modelsec.core.executors import ExecutorConfig
from modelsec.core.seeding import derived_seed, numpy_stream
from modelsec.data import load_splits
from modelsec.data.dataset import Dataset
from modelsec.defenses.training import training_set
from modelsec.results.dp_audit import MULTI_RUN_FIELDS, DPAuditResult, DPClaim, load_dp_audit_schema
from modelsec.stats.dp_audit_bound import DEFAULT_BETA, one_run_bound

CANARIES = 40
TRAINING = {"epochs": 1, "batch_size": 64}
SECONDS = {"train_seconds", "score_seconds", "bound_seconds", "audit_seconds", "training_seconds"}


def audit(runs: int, *, seed: int = 3, executor: ExecutorConfig | None = None, **options: Any) -> DPAuditResult:
    """The CLI's way: the training's seed is the audit's."""
    return run_dp_audit(
        "standard", data="digits", arch="mlp", config={**TRAINING, "seed": seed}, canaries=CANARIES, seed=seed,
        runs=runs, executor=executor, **options,
    )  # fmt: skip


def without_seconds(value: Any) -> Any:
    """The result's JSON without the wall-clock seconds (the only numbers that may differ between two runs)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k not in SECONDS}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def todays_audit(seed: int) -> DPAuditResult:
    """The reference: the one-run audit as ``run_dp_audit`` ran it before it had runs, step by step, with one torch
    thread (a run's threads, ``--cpus-per-task``, by default; the thread count changes float reduction orders)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _todays_audit(seed)
    finally:
        torch.set_num_threads(threads)


def _todays_audit(seed: int) -> DPAuditResult:
    splits = load_splits("digits", seed=0)
    train = training_set(splits, None)
    taken = numpy_stream(seed, 0x9001).permutation(len(splits.population))
    pool = splits.population.subset(np.sort(taken[:CANARIES]), name=f"{splits.population.name}/canary-source")
    population = splits.population.subset(np.sort(taken[CANARIES:]))
    train_fn = defense_trainer(
        "standard", {**TRAINING, "seed": seed}, arch="mlp", test=splits.nonmembers, population=population
    )
    result = one_run_audit(train_fn, train, canaries=CANARIES, canary_source=pool, seed=seed)
    result.training["data"] = {"source": splits.source, "split_seed": splits.seed, "members_used": len(train)}
    return result


@pytest.fixture(scope="module")
def three_runs() -> DPAuditResult:
    return audit(3, executor=ExecutorConfig(workers=1))


def test_run_seeds() -> None:
    assert run_seed(3, 0) == 3
    assert [run_seed(3, i) for i in (1, 2)] == [derived_seed(3, "dp-audit-run", i) for i in (1, 2)]
    assert len({run_seed(3, i) for i in range(50)}) == 50


def test_one_run_is_todays_audit_and_its_file_is_unchanged() -> None:
    result = audit(1, executor=ExecutorConfig(workers=1))
    today = todays_audit(3)
    assert without_seconds(result.to_dict()) == without_seconds(today.to_dict())
    assert list(result.to_dict()) == list(today.to_dict())  # the same keys, in the same order: no runs fields
    assert not set(MULTI_RUN_FIELDS) & set(result.to_dict())
    assert result.runs is None and result.beta == DEFAULT_BETA and result.seed == 3
    jsonschema.validate(json.loads(result.to_json()), load_dp_audit_schema())


def test_run_i_does_not_depend_on_the_number_of_runs(three_runs: DPAuditResult) -> None:
    two = audit(2, executor=ExecutorConfig(workers=1))
    assert two.runs is not None and three_runs.runs is not None
    for a, b in zip(two.runs, three_runs.runs[:2], strict=True):  # the same canaries, inclusion and training
        assert (a.index, a.seed, a.included, a.test_accuracy, a.train_accuracy) == (
            b.index, b.seed, b.included, b.test_accuracy, b.train_accuracy,
        )  # fmt: skip
        assert a.included_scores == b.included_scores and a.excluded_scores == b.excluded_scores
    # run 0 is the one-run audit; run 1 that of its own seed (the bounds differ only in their level)
    for run, seed in ((three_runs.runs[0], 3), (three_runs.runs[1], run_seed(3, 1))):
        alone = audit(1, seed=seed, executor=ExecutorConfig(workers=1))
        assert (alone.included_scores, alone.excluded_scores) == (run.included_scores, run.excluded_scores)
        assert alone.training["test_accuracy"] == run.test_accuracy
    assert len({tuple(r.included_scores) for r in three_runs.runs}) == 3  # different canaries and trainings


def test_combined_bound_is_bonferroni_over_the_runs(three_runs: DPAuditResult) -> None:
    result, n = three_runs, 3
    assert result.runs is not None and result.run_count == n == len(result.runs)
    bounds = []
    for run in result.runs:
        scores = np.array(run.included_scores + run.excluded_scores)
        included = np.arange(scores.size) < len(run.included_scores)
        bound = one_run_bound(scores, included, delta=result.delta, beta=DEFAULT_BETA / n)
        assert run.lower_bound == bound.epsilon and run.level == pytest.approx(1 - DEFAULT_BETA / n)
        assert (run.r, run.v) == (bound.best.r, bound.best.v) and run.tests == bound.tests
        bounds.append(bound.epsilon)
    assert result.combined_lower_bound == result.lower_bound == max(bounds)
    assert result.evidence_run == bounds.index(max(bounds))
    evidence = result.runs[result.evidence_run]
    assert (result.included_scores, result.k_plus, result.v) == (evidence.included_scores, evidence.k_plus, evidence.v)
    assert result.beta == DEFAULT_BETA and result.seed == 3 and result.passed and result.claimed_epsilon is None
    assert result.train_seconds == pytest.approx(sum(r.train_seconds for r in result.runs))
    d = json.loads(result.to_json())
    jsonschema.validate(d, load_dp_audit_schema())
    assert DPAuditResult.from_dict(d) == result
    assert "3 runs' bounds" in result.verdict() and "95% together" in result.verdict()


def canary_oracle(train: Dataset) -> AuditTraining:
    """A "training" that recites the label of every record it saw (a canary scores high exactly when included),
    with a claim that depends on the training set's size, as DP-SGD's does."""
    seen = {row.tobytes(): int(label) for row, label in zip(train.x, train.y, strict=True)}

    def logits(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), train.num_classes))
        for i, row in enumerate(x):
            if row.tobytes() in seen:
                out[i, seen[row.tobytes()]] = 8.0
        return out

    return AuditTraining(logits, DPClaim(epsilon=len(train) / 1000, delta=1e-5, accountant="prv"))


def test_a_violated_claim_is_judged_on_the_combined_bound_against_the_largest_claim() -> None:
    rng = np.random.default_rng(0)
    data = Dataset("toy", rng.random((300, 8), dtype=np.float32), rng.integers(0, 2, 300), 2, (0.0, 1.0))
    runs = [
        one_run_audit(canary_oracle, data, canaries=100, canary_kind="out-of-distribution", seed=run_seed(1, i),
                      beta=DEFAULT_BETA / 3)
        for i in range(3)
    ]  # fmt: skip
    combined = combine_runs(runs)
    claims = [r.claimed_epsilon for r in runs]
    assert len(set(claims)) > 1 and combined.claimed_epsilon == max(claims)  # 300 records + the included canaries
    assert combined.claim is not None and combined.claim.epsilon == max(claims)
    # 100 perfect guesses at 5% / 3: about 3.1; at 5%: 3.47
    assert combined.lower_bound == max(r.lower_bound for r in runs) == pytest.approx(3.1, abs=0.1)
    assert not combined.passed and combined.runs is not None and not any(r.passed for r in combined.runs)
    assert "EXCEEDS" in combined.verdict() and any("claims differ" in note for note in combined.notes)
    assert combine_runs(runs[:1]) is runs[0]
    with pytest.raises(ValueError, match="beta / 2"):
        combine_runs(runs[:2])  # bounded at beta / 3, not / 2


def test_the_same_numbers_in_this_process_in_two_processes_and_on_ray(
    ray_instance: Any, three_runs: DPAuditResult
) -> None:
    expected = without_seconds(three_runs.to_dict())
    for executor in (ExecutorConfig(workers=2), ExecutorConfig(executor="ray")):
        assert without_seconds(audit(3, executor=executor).to_dict()) == expected, executor.executor


def test_refuses_bad_runs() -> None:
    with pytest.raises(ConfigError, match="--runs"):
        audit(0)
    with pytest.raises(ConfigError, match="--runs"):
        audit(dp_audit.MAX_RUNS + 1)


def run_cli(*args: str) -> int:
    from modelsec.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
        raise SystemExit(0)
    return int(e.value.code or 0)


def test_cli_runs_on_ray_exit_code_and_json(
    ray_instance: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["audit-dp", "--data", "digits", "--arch", "mlp", "--epochs", "1", "--canaries", str(CANARIES),
              "--runs", "2", "--executor", "ray"]  # fmt: skip
    out = tmp_path / "generous"
    assert run_cli(*common, "--noise-multiplier", "1", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "run 0 (seed 0)" in printed and "run 1 (seed" in printed and "combined lower bound" in printed
    d = json.loads((out / "dp_audit.json").read_text())
    jsonschema.validate(d, load_dp_audit_schema())
    assert d["run_count"] == 2 and [r["seed"] for r in d["runs"]] == [0, run_seed(0, 1)]
    assert d["lower_bound"] == d["combined_lower_bound"] == max(r["lower_bound"] for r in d["runs"])
    assert d["passed"] and d["claimed_epsilon"] == max(r["claimed_epsilon"] for r in d["runs"])
    html = (out / "dp_audit.html").read_text()
    assert 'id="runs"' in html and "combined lower bound" in html and html.count('<tr class="evidence">') == 1

    # a training that recites its canaries, under a claim of epsilon 0.5: both runs contradict it
    def reciting(defense: str, config: Any, **kwargs: Any) -> dp_audit.TrainFn:
        def train(data: Dataset) -> AuditTraining:
            return AuditTraining(canary_oracle(data).logits, DPClaim(epsilon=0.5, delta=1e-5, accountant="prv"))

        return train

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(dp_audit, "defense_trainer", reciting)  # this process only: hence --workers 1
        out = tmp_path / "violated"
        argv = ["audit-dp", "--data", "digits", "--canaries", "100", "--canary-kind", "out-of-distribution",
                "--runs", "2", "--workers", "1", "--out", str(out), "-q"]  # fmt: skip
        assert run_cli(*argv) == 3
    assert "FAIL: combined empirical epsilon lower bound" in capsys.readouterr().err
    d = json.loads((out / "dp_audit.json").read_text())
    assert not d["passed"] and d["lower_bound"] > 0.5 and not any(r["passed"] for r in d["runs"])
    assert run_cli(*common, "--runs", "0", "--out", str(tmp_path / "x")) == 2
    assert run_cli(*common[:-2], "--workers", "0", "--out", str(tmp_path / "x")) == 2
