"""Square as a probe in the chain (issue 16, ``standard`` on a model whose pre-attack checks find nothing).

- On a linear model, whose L-inf robustness is known in closed form, the gradient chain leaves only samples that
  nothing can break: the probe attacks its seeded draw (sized by the audit's records), breaks none, leaves the rest
  unattacked, and the worst case is the exact one, as when Square runs on every survivor (seeds 0-2).
- Where the draw gives a break, Square runs on every survivor.
- Blocks of records size their draws by the audit's records and pool their counts.
- The audit turns the probe off when a pre-attack check fires; the report states the bound.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from modelsec.attacks.evasion.apgd import APGD, APGDTargeted
from modelsec.attacks.evasion.square import Square
from modelsec.audits import robustness, sharding
from modelsec.audits.presets import PRESETS
from modelsec.audits.robustness import evaluate_robustness, probe_size
from modelsec.audits.sanity import Remedies, apply_remedies, pre_checks
from modelsec.audits.sharding import evaluate_in_blocks
from modelsec.core.seeding import generator
from modelsec.models.base import Classifier
from modelsec.report import render_html, render_markdown, tables
from modelsec.results.audit import AttackProbe
from tests.report_fixtures import make_audit_result

EPS = 0.25
CLASSES, FEATURES = 3, 10
# exact on a linear model (APGD-CE alone misses a few samples of seed 1: its loss pulls towards every wrong class)
GRADIENT_CHAIN = [APGD(steps=30), APGDTargeted(steps=30, n_targets=2)]


def linear_problem(seed: int, n: int = 400) -> tuple[Classifier, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 3-class linear model, inputs labelled by it, and whether each input is robust at L-inf ``EPS``: for a
    linear model the worst point of the ball against class j is a vertex, so sample i is robust iff
    ``z_y - z_j > EPS * ||w_y - w_j||_1`` for every j != y (bounds wide enough never to clip). Samples whose
    margin lies within 20% of the boundary are dropped, so a converged attack decides every one of them."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Linear(FEATURES, CLASSES)
    with torch.no_grad():
        net.weight.copy_(torch.randn(CLASSES, FEATURES, generator=g))
        net.bias.zero_()
    x = torch.randn(4 * n, FEATURES, generator=g)
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    w = net.weight.detach()
    gap = z.gather(1, y[:, None]) - z  # z_y - z_j
    reach = EPS * (w[y][:, None, :] - w[None, :, :]).abs().sum(2)  # eps * ||w_y - w_j||_1
    ratio = (gap / reach.clamp_min(1e-12)).masked_fill(torch.nn.functional.one_hot(y, CLASSES).bool(), math.inf)
    worst = ratio.min(1).values  # < 1: breakable
    keep = ((worst - 1).abs() > 0.2).nonzero().flatten()[:n]
    clf = Classifier(net, input_shape=(FEATURES,), num_classes=CLASSES, bounds=(-100.0, 100.0))
    return clf, x[keep], y[keep], worst[keep] > 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_on_what_only_the_exact_survivors_leave(seed: int) -> None:
    clf, x, y, truly_robust = linear_problem(seed)
    assert 0.2 < truly_robust.float().mean() < 0.8  # a middle range: both kinds of sample
    chain = [*GRADIENT_CHAIN, Square(max_queries=200, probe=True)]
    records = 4000  # the audit's: the draw is 3 / (0.01 * 4000) = 7.5% of the survivors
    run = evaluate_robustness(clf, x, y, attacks=chain, eps=[EPS], generator=generator(seed), records=records)
    assert torch.equal(run.robust[EPS], truly_robust)  # the exact worst case
    square = run.result.results[2]
    standing = int(truly_robust.sum())
    drawn = math.ceil(standing * 3 / (0.01 * records))
    assert square.probe == AttackProbe(standing, drawn, 0, standing - drawn, drawn)
    assert square.cost is not None and square.cost.attacked == drawn  # the rest was never queried
    assert square.cost.forward == drawn * 200 + drawn  # 200 queries each (no break), and the re-classification
    # the same numbers as Square on every survivor
    full = [*GRADIENT_CHAIN, Square(max_queries=200)]
    everyone = evaluate_robustness(clf, x, y, attacks=full, eps=[EPS], generator=generator(seed), records=records)
    assert everyone.result.results[2].probe is None
    assert everyone.result.results[2].cost.attacked == standing  # type: ignore[union-attr]
    assert torch.equal(everyone.robust[EPS], run.robust[EPS])
    assert run.result.robust_accuracy == everyone.result.robust_accuracy


def test_a_draw_with_a_break_runs_on_every_survivor() -> None:
    clf, x, y, truly_robust = linear_problem(0)
    run = evaluate_robustness(
        clf, x, y, attacks=[Square(max_queries=200, probe=True)], eps=[EPS], generator=generator(0), records=4000
    )
    probe = run.result.results[0].probe
    assert probe is not None and probe.broken > 0
    assert probe.skipped == 0 and probe.vouching == 0 and probe.bound() == 0.0
    cost = run.result.results[0].cost
    assert cost is not None and cost.attacked == len(y)  # the draw, then the rest
    assert not bool((run.robust[EPS] & ~truly_robust).sum() > 0.5 * (~truly_robust).sum())  # it did break


def test_an_audit_of_at_most_300_records_runs_the_probe_in_full() -> None:
    clf, x, y, _ = linear_problem(0, n=300)
    run = evaluate_robustness(
        clf, x, y, attacks=[APGD(steps=10), Square(max_queries=50, probe=True)], eps=[EPS], generator=generator(0)
    )
    assert run.result.results[1].probe is None  # records default to len(x) = 300: every survivor
    assert probe_size(1000, 300) == 1000 and probe_size(7, 301) == 7


def test_probe_bound_is_the_exact_binomial_one() -> None:
    assert AttackProbe(100, 3, 0, 97, 3).bound() == pytest.approx(97 * (1 - 0.05 ** (1 / 3)))
    assert AttackProbe(390, 117, 0, 273, 117).bound() == pytest.approx(273 * (1 - 0.05 ** (1 / 117)))
    assert AttackProbe(390, 117, 0, 273, 117).bound() <= 0.01 * 1000  # probe_size's promise for 1000 records
    assert AttackProbe(10, 3, 1, 0, 0).bound() == 0.0
    assert AttackProbe(1, 2, 0, 3, 4) + AttackProbe(10, 20, 1, 0, 0) == AttackProbe(11, 22, 1, 3, 4)


def test_blocks_size_their_draws_by_the_audits_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharding, "SHARD_RECORDS", 128)
    monkeypatch.setattr(robustness, "PROBE_BOUND", 0.1)  # 3 / (0.1 * 300): a 10% draw
    clf, x, y, truly_robust = linear_problem(1, n=300)
    chain = [*GRADIENT_CHAIN, Square(max_queries=100, probe=True)]
    run = evaluate_in_blocks(clf, x, y, attacks=chain, eps=[EPS], generator=generator(0), seed=0)
    assert torch.equal(run.robust[EPS], truly_robust)
    probe = run.result.results[2].probe
    assert probe is not None
    blocks = [truly_robust[a:b] for a, b in sharding.record_blocks(len(y))]
    assert len(blocks) == 3
    drawn = sum(math.ceil(int(b.sum()) * 0.1 - 1e-9) for b in blocks)
    assert probe == AttackProbe(int(truly_robust.sum()), drawn, 0, int(truly_robust.sum()) - drawn, drawn)
    # each block alone, with the audit's records, draws what it drew in the sharded run
    alone = evaluate_robustness(clf, x[:128], y[:128], attacks=chain, eps=[EPS], generator=generator(0), records=len(y))
    standing, drawn = int(blocks[0].sum()), math.ceil(int(blocks[0].sum()) * 0.1 - 1e-9)
    assert alone.result.results[2].probe == AttackProbe(standing, drawn, 0, standing - drawn, drawn)


def test_the_probe_only_where_no_pre_attack_check_fires() -> None:
    clf, x, y, _ = linear_problem(0, n=200)
    flags, remedies = pre_checks(clf, x, y)
    assert flags == [] and remedies.black_box_probe
    plan = apply_remedies(list(PRESETS["standard"]), remedies, "standard")
    assert next(s for s in plan if s.attack == "square").params == {"max_queries": 5000, "probe": True}
    soft = Classifier(nn.Sequential(clf.module, nn.Softmax(dim=1)), input_shape=(FEATURES,), num_classes=CLASSES)
    flags, remedies = pre_checks(soft, x, y)
    assert [f.check for f in flags] == ["probability-outputs"] and not remedies.black_box_probe
    plan = apply_remedies(list(PRESETS["standard"]), remedies, "standard")
    assert next(s for s in plan if s.attack == "square").params == {"max_queries": 5000, "probe": False}
    # without the checks (an audit with --no-checks) nothing vouches for the gradients either
    assert not Remedies().black_box_probe


def test_the_report_states_the_bound() -> None:
    clf, x, y, _ = linear_problem(0)
    chain = [*GRADIENT_CHAIN, Square(max_queries=50, probe=True)]
    run = evaluate_robustness(clf, x, y, attacks=chain, eps=[EPS], generator=generator(0), records=4000)
    probe = run.result.results[2].probe
    assert probe is not None
    (note,) = tables.probe_notes(run.result)
    assert f"first on a seeded draw of {probe.probed} of the {probe.standing} samples standing" in note
    assert f"{probe.skipped} were not attacked" in note
    assert f"at most {probe.bound():.1f} of them" in note
    assert tables.probe_notes(dataclasses.replace(run.result, results=run.result.results[:2])) == []


def test_html_and_markdown_reports_show_the_probe() -> None:
    result = make_audit_result()
    assert result.robustness is not None
    first = dataclasses.replace(result.robustness.results[0], probe=AttackProbe(390, 117, 0, 273, 117))
    rob = dataclasses.replace(result.robustness, results=[first, *result.robustness.results[1:]])
    shown = dataclasses.replace(result, robustness=rob)
    (note,) = tables.probe_notes(rob)
    assert "at most 6.9 of them" in note  # 273 * (1 - 0.05 ** (1 / 117)) = 6.90
    assert note in render_html(shown)
    assert note in render_markdown(shown)
    assert "ran as a probe" not in render_html(result) and "ran as a probe" not in render_markdown(result)


def test_the_time_left_counts_a_probe_on_its_draw() -> None:
    """The progress estimate of the plan's later steps: a probed attack on its share of the samples standing."""
    rest: list[tuple[float | None, int]] = [(0.1, 0), (0.1, 1), (None, 0)]
    per_sample = {"apgd": 10.0, "square": 100.0}
    shares = {"apgd": 1.0, "square": robustness.probe_share(1000)}
    passes, unknown = robustness._later_passes(rest, ["apgd", "square"], per_sample, None, 50, shares, 20)
    assert not unknown
    assert passes == pytest.approx(10 * 20 + 100 * 20 * 0.3 + 10 * 50)
