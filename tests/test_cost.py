"""What each attack spends (forward and backward passes) against its floor, what a perfect per-sample early stop
would spend (issue 16): exact counts on analytic cases, early stops that change no outcome, the result schema,
the report and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from modelsec.attacks.base import ThreatModel
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.audits.robustness import evaluate_robustness
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.models.base import Classifier
from modelsec.models.loading import load_model
from modelsec.report.html import render_html
from modelsec.report.markdown import render_markdown
from modelsec.results.audit import AttackCost, AuditResult
from modelsec.results.schema import validate_result_dict
from tests.cli_runner import modelsec
from tests.conftest import LinearBinary
from tests.report_fixtures import make_audit_result

GOLDEN_MODEL = Path(__file__).parent / "data" / "golden-digits-mlp.safetensors"


def linear(n: int = 12, margin: float = 1.0) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A binary linear model on 4 features, ``w = (1, 1, 1, 1)``, and ``n`` points of class 1 at L-inf distance
    ``margin / 4`` from its boundary (the L-inf ball of radius eps moves the logit by at most ``4 eps``)."""
    model = LinearBinary(torch.ones(4), 0.0)
    clf = Classifier(model, input_shape=(4,), num_classes=2, bounds=(-10.0, 10.0), batch_size=5)
    x = torch.full((n, 4), margin / 4) + torch.linspace(0, 0.01, n)[:, None]
    return clf, x, torch.ones(n, dtype=torch.int64)


def attack(name: str, **params: object) -> object:
    return EVASION_ATTACKS.get(name)(**params)


@pytest.mark.parametrize("steps", [1, 7])
def test_pgd_spends_exactly_its_floor_when_no_sample_breaks(steps: int) -> None:
    """n samples none of which can break (the ball is far from the boundary): PGD with s steps spends s + 1 forward
    passes a sample (s steps and the last iterate's score), s backward passes, plus the contract's 2 (the clean
    prediction and the re-classification); exactly the floor."""
    clf, x, y = linear(n=12, margin=4.0)
    res = attack("pgd", steps=steps)(clf, x, y, ThreatModel("linf", 0.1), generator=generator(0))
    n = len(x)
    assert res.robust.all()
    assert res.cost == AttackCost(
        attacked=n,
        forward=n * (steps + 1) + 2 * n,
        backward=n * steps,
        floor_forward=n * (steps + 3),
        floor_backward=n * steps,
    )
    assert res.cost.forward == res.queries


def test_apgd_and_square_spend_exactly_their_floor_when_no_sample_breaks() -> None:
    clf, x, y = linear(n=9, margin=4.0)
    n, threat = len(x), ThreatModel("linf", 0.1)
    apgd = attack("apgd", steps=6)(clf, x, y, threat, generator=generator(0))
    # the start and 6 steps forward, the start and 5 steps backward (the last iterate's gradient is never used)
    assert apgd.cost == AttackCost(n, n * 7 + 2 * n, n * 6, n * 7 + 2 * n, n * 6)
    square = attack("square", max_queries=40)(clf, x, y, threat, generator=generator(0))
    assert square.cost == AttackCost(n, n * 40 + 2 * n, 0, n * 40 + 2 * n, 0)


@pytest.mark.parametrize("steps", [2, 20])
def test_pgd_spends_about_n_when_every_sample_breaks_at_the_first_step(steps: int) -> None:
    """A first step of size eps from the clean input breaks every sample: the second evaluation sees it and the
    samples stop, whatever the number of steps. The fused forward and backward pass spends one backward pass per
    broken sample over the floor (its gradient at the point that broke it)."""
    clf, x, y = linear(n=12, margin=1.0)
    pgd = attack("pgd", steps=steps, random_start=False, step_size=0.5)
    res = pgd(clf, x, y, ThreatModel("linf", 0.5), generator=generator(0))
    n = len(x)
    assert not res.robust.any()
    assert res.cost == AttackCost(n, 2 * n + 2 * n, 2 * n, 2 * n + 2 * n, n)
    assert res.cost.overhead == 2.0


def test_deepfool_spends_no_backward_pass_on_a_broken_sample() -> None:
    """On an affine binary model one DeepFool step breaks every sample: one backward pass each (one candidate
    class), and no second step. Forward: the contract's 2 and the raw candidate's check, the clean logits, the
    step's pass with gradients and the check of the new iterate."""
    clf, x, y = linear(n=10, margin=1.0)
    res = attack("deepfool")(clf, x, y, ThreatModel("l2", 10.0), generator=generator(0))
    n = len(x)
    assert not res.robust.any()
    assert res.cost == AttackCost(n, 6 * n, n, 5 * n, n)


@pytest.fixture(scope="module")
def digits() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """The golden digits MLP and 40 of its test records (the non-members)."""
    splits = load_splits("digits", seed=0)
    x, y = splits.nonmembers.x[:40], splits.nonmembers.y[:40]
    return load_model(GOLDEN_MODEL).classifier, torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize(
    ("name", "norm", "eps", "params"),
    [
        ("cw-l2", "l2", 1.0, {"steps": 20, "binary_search_steps": 3}),
        ("hopskipjump", "l2", 1.0, {"iterations": 4, "init_num_evals": 30, "max_num_evals": 50}),
        ("hopskipjump", "linf", 0.1, {"iterations": 4, "init_num_evals": 30, "max_num_evals": 50}),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_stopping_at_eps_breaks_the_same_samples_for_less(
    digits: tuple[Classifier, torch.Tensor, torch.Tensor], name: str, norm: str, eps: float, params: dict, seed: int
) -> None:
    """A minimum-norm attack told to stop a sample once it is adversarial inside the ball breaks exactly the same
    samples, seeded, and spends less wherever it broke one before its budget ran out."""
    clf, x, y = digits
    a = attack(name, **params)
    full = a(clf, x, y, ThreatModel(norm, eps), generator=generator(seed))
    stopped = a(clf, x, y, ThreatModel(norm, eps), generator=generator(seed), stop_at_eps=True)
    assert torch.equal(full.success, stopped.success)
    assert full.success.any()
    assert stopped.cost.forward < full.cost.forward
    assert stopped.cost.backward <= full.cost.backward


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deepfool_breaks_the_same_samples_as_before_on_digits(
    digits: tuple[Classifier, torch.Tensor, torch.Tensor], seed: int
) -> None:
    """DeepFool now takes gradients of the standing samples only: the robust accuracy on the digits model is the
    one DeepFool with gradients of every sample in the step (the old way, its candidates kept on a copy of the
    model that cannot tell) gives, and the distances agree to float round-off."""
    clf, x, y = digits
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:30]
    deepfool = attack("deepfool", steps=20, candidates=10)  # the reference's candidates: only the early stop differs
    res = deepfool(clf, x[rows], y[rows], ThreatModel("linf", 0.1), generator=generator(seed))
    assert res.cost is not None and res.cost.backward == res.cost.floor_backward
    # the old loop, written out: one pass with gradients on every sample still active, broken or not
    ref = _deepfool_reference(clf, x[rows], y[rows], steps=20)
    want = clf.predict(torch.clamp(ref, 0, 1)) != y[rows]
    found = torch.isfinite(res.min_distance)
    assert torch.equal(found, want)


def _deepfool_reference(clf: Classifier, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """DeepFool (L-inf, 10 candidates, overshoot 0.02) as it was before the cost work: the step's gradient pass also
    decides which samples stop."""
    k = min(10, clf.num_classes)
    with torch.no_grad():
        clean = clf.logits(x)
    others = (
        clean.masked_fill(torch.nn.functional.one_hot(y, clf.num_classes).bool(), float("-inf")).topk(k - 1).indices
    )
    r_tot, x_adv, active = torch.zeros_like(x), x.clone(), torch.arange(len(x))
    for _ in range(steps):
        xa = x_adv[active].detach().requires_grad_(True)
        z = clf.logits(xa)
        keep = z.detach().argmax(dim=1) == y[active]
        if not keep.any():
            break
        f_all = z.gather(1, others[active]) - z.gather(1, y[active][:, None])
        f_abs = f_all.detach()[keep].abs()
        best = torch.full_like(f_abs[:, 0], float("inf"))
        best_f, best_norm = torch.zeros_like(best), torch.ones_like(best)
        best_w = torch.zeros((f_abs.shape[0], x[0].numel()))
        for j in range(k - 1):
            (g,) = torch.autograd.grad(f_all[:, j].sum(), xa, retain_graph=j < k - 2)
            g = g[keep].flatten(1)
            g_norm = g.abs().sum(dim=1)
            dist = f_abs[:, j] / g_norm.clamp_min(1e-12)
            closer = dist < best
            best_w = torch.where(closer[:, None], g, best_w)
            best_f, best_norm = torch.where(closer, f_abs[:, j], best_f), torch.where(closer, g_norm, best_norm)
            best = torch.where(closer, dist, best)
        r = ((best_f + 1e-6) / best_norm.clamp_min(1e-12))[:, None] * best_w.sign()
        active = active[keep]
        r_tot[active] += r.view(-1, *x.shape[1:])
        x_adv[active] = torch.clamp(x[active] + 1.02 * r_tot[active], 0, 1)
    return x_adv


def test_the_chain_records_what_each_attack_was_handed(digits: tuple[Classifier, torch.Tensor, torch.Tensor]) -> None:
    """Each entry's samples are those every earlier attack (and the smaller eps) left standing; the passes are the
    attack's own, and the minimum-norm pass has its own seconds and cost."""
    clf, x, y = digits
    attacks = [attack("fgsm"), attack("pgd", steps=5), attack("deepfool", steps=10)]
    run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[0.1, 0.2], generator=generator(0))
    entries = run.result.results
    standing = int((run.pred_clean == y).sum())
    for e in entries:
        assert e.cost is not None and e.cost.attacked == standing, (e.attack, e.eps)
        assert e.cost.backward >= e.cost.floor_backward and e.cost.forward >= e.cost.floor_forward
        standing = round(e.robust_accuracy * len(y))
    (stats,) = run.result.min_norm
    assert stats.seconds is not None and stats.cost is not None and stats.cost.attacked == stats.n


def test_cost_is_in_result_json_and_old_results_still_load() -> None:
    result = make_audit_result()
    rob = result.robustness
    assert rob is not None
    costed = [dataclasses.replace(e, cost=AttackCost(100, 900, 800, 850, 700)) for e in rob.results]
    new = dataclasses.replace(result, robustness=dataclasses.replace(rob, results=costed))
    d = json.loads(new.to_json())
    validate_result_dict(d)
    assert AuditResult.from_dict(d) == new
    assert d["robustness"]["results"][0]["cost"]["floor_backward"] == 700
    old = json.loads(result.to_json())  # as written before: no cost anywhere
    for e in old["robustness"]["results"]:
        del e["cost"]
    assert all(e.cost is None for e in AuditResult.from_dict(old).robustness.results)
    d["robustness"]["results"][0]["cost"]["forward"] = -1
    with pytest.raises(ValueError, match="forward"):
        validate_result_dict(d)


def test_report_shows_where_the_attack_time_went() -> None:
    result = make_audit_result()
    rob = result.robustness
    assert rob is not None
    costed = [dataclasses.replace(e, cost=AttackCost(912, 40_128, 36_480, 40_128, 35_000)) for e in rob.results]
    result = dataclasses.replace(result, robustness=dataclasses.replace(rob, results=costed))
    html = render_html(result)
    assert 'id="attack-time"' in html and "36,480" in html and "1.04x" in html
    md = render_markdown(result)
    assert "Where the attack time went" in md and "36,480" in md and "1.04x" in md
    assert "Where the attack time went" not in render_html(make_audit_result(robustness=None))


def test_cli_prints_where_the_time_went_unless_quiet(tmp_path: Path) -> None:
    args = ["audit", "--model", str(GOLDEN_MODEL), "--attacks", "fgsm,pgd", "--samples", "30", "--eps", "0.1"]
    args += ["--membership-attacks", "loss-threshold", "--mia-samples", "30", "--no-store", "--no-checks"]
    proc = modelsec(*args, "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert "Where the time went" in proc.stdout and "pgd eps 0.1" in proc.stdout
    assert "Stages (" in proc.stdout and "robustness" in proc.stdout.split("Stages (")[1].splitlines()[0]
    quiet = modelsec(*args, "--out", str(tmp_path / "b"), "--quiet")
    assert quiet.returncode == 0 and "Where the time went" not in quiet.stdout
    saved = json.loads((tmp_path / "b" / "result.json").read_text())
    assert all(e["cost"]["attacked"] > 0 for e in saved["robustness"]["results"])
