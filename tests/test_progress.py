"""Progress output that estimates the time left from the samples still standing (issue 16): the :class:`Work`
account (analytic cases with a fake clock and a fake pass counter), the attacks' reports (an APGD run where every
sample breaks in the first step has nothing left to spend), the audit's plan estimate, the existing callers of
``Progress.task`` unchanged, and the terminal and plain-text output."""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.attacks.evasion import APGD, FGSM, PGD, APGDTargeted, CarliniWagnerL2, DeepFool, Square
from modelsec.audits.robustness import evaluate_robustness
from modelsec.core import progress
from modelsec.core.progress import Advance, NullProgress, Progress, RichProgress, Work, format_left
from modelsec.models.base import Classifier
from tests.conftest import LinearBinary, make_blobs

# -- helpers -------------------------------------------------------------------------------------------------------


class Counter:
    """A fake pass counter and clock."""

    def __init__(self) -> None:
        self.passes = 0.0
        self.seconds = 0.0


def live_work(total: int, counter: Counter) -> Work:
    return Work("t", total, lambda n: None, lambda: counter.passes, live=True, clock=lambda: counter.seconds)


class Recording(Progress):
    """Keeps the estimates: for each change of a live Work, (description, samples standing, work left, lower bound,
    the parent's work left)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int | None, float | None, bool, float | None]] = []
        self.lines: list[str] = []

    def listens(self) -> bool:
        return True

    @contextlib.contextmanager
    def work(self, description: str, total: int, spent: Callable[[], float] | None = None) -> Iterator[Work]:
        with super().work(description, total, spent) as w:
            w.watch = self._record
            yield w
            self.lines.append(f"{description}: {w.standing} of {w.of} standing")

    def _record(self, w: Work) -> None:
        left, lower = w.remaining()
        parent = w.parent.remaining()[0] if w.parent is not None else None
        self.log.append((w.description, w.standing, left, lower, parent))


class TaskOnly(Progress):
    """A caller written before ``work`` existed: overrides ``task`` only."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int, list[int]]] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        advances: list[int] = []
        self.tasks.append((description, total, advances))
        yield advances.append


def linear(n: int = 200) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """The 8-dimensional linear problem of ``conftest.linear_problem``: every sample lies within L-inf distance
    ``|w.x + b| / ||w||_1 < 1`` of the boundary."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=g)
    model = LinearBinary(w, 0.1)
    x = torch.rand((n, 8), generator=g) * 2 - 1
    with torch.no_grad():
        y = (model(x)[:, 1] > 0).long()
    return Classifier(model, input_shape=(8,), num_classes=2, bounds=(-10.0, 10.0), batch_size=256), x, y


def blobs(seed: int = 0, batch_size: int = 256) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A small MLP trained on 240 points of 4 Gaussian blobs in [0, 1]^10: samples break gradually as eps grows."""
    net, x, y = _trained(seed)
    return Classifier(net, input_shape=(10,), num_classes=4, bounds=(0.0, 1.0), batch_size=batch_size), x, y


@functools.cache
def _trained(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    xs, ys = make_blobs(240, 10, 4, seed)
    x, y = torch.tensor(xs), torch.tensor(ys)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, x, y


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the account, analytic --------------------------------------------------------------------------------------------


def test_work_left_is_the_survivors_times_their_cost_and_the_time_left_is_that_over_the_observed_rate() -> None:
    c = Counter()
    w = live_work(4, c)
    with w.group(2):
        assert w.remaining() == (None, False) and w.standing == 4  # nothing known yet
        progress.standing(2, 10)  # 2 samples, 10 passes each: the full cost of an item is 10
        assert w.remaining() == (2 * 10 + 2 * 10, False)
        c.passes, c.seconds = 10, 1.0
        progress.standing(1, 5)  # one broke: what is left to pay for is the survivor's
        assert w.remaining() == (1 * 5 + 2 * 10, False) and w.standing == 3
        assert w.seconds_left() == (25 * 1.0 / 10, False)
        assert w.fraction() == 10 / (10 + 25)  # the bar: the part of the work done
        c.passes, c.seconds = 15, 2.0
    # the group cost 15 passes for 2 items: the 2 items left are priced at the measured 7.5 each
    assert w.finished == 2 and w.remaining() == (15.0, False) and w.standing == 3
    with w.group(2), progress.stage() as later:
        later.after = lambda m: 3.0 * m  # an enclosing loop: 3 more passes per sample standing after this one
        progress.standing(2, 4)
        assert w.remaining() == (2 * 4 + 2 * 3.0, False)
        c.passes, c.seconds = 30, 3.0
        assert w.seconds_left() == (14 * 3.0 / 30, False)
    assert w.remaining() == (0.0, False) and w.finished == 4
    w.finish(1)
    assert (w.standing, w.of) == (1, 4)


def test_a_plan_adds_its_later_parts_priced_on_the_survivors_of_the_part_under_way() -> None:
    rec = Recording()
    c = Counter()
    with rec.work("plan", 3, lambda: c.passes) as plan:
        plan.later = lambda standing: (7.0 * standing, False)
        with rec.work("part", 5, lambda: c.passes) as part, part.group(5):
            assert part.parent is plan and plan.child is part and plan.innermost() is part
            progress.standing(5, 2)
            assert plan.remaining() == (5 * 2 + 7.0 * 5, False)
            progress.standing(1, 1)
            assert plan.remaining() == (1 * 1 + 7.0 * 1, False)
            plan.later = lambda standing: (7.0 * standing, True)  # a later part of unknown cost: a lower bound
            assert plan.remaining() == (8.0, True)
        assert plan.child is None
        assert plan.remaining() == (None, True)  # between parts: the next part's cost is not known yet


def test_estimates_outside_a_listening_work_are_ignored_and_a_dead_work_keeps_none() -> None:
    progress.standing(3, 1.0)  # no listener: nothing happens
    with progress.stage() as later:
        later.after = lambda m: 1.0
    for p in (NullProgress(), TaskOnly(), RichProgress(stream=io.StringIO()), RichProgress(quiet=True)):
        with p.work("t", 2, lambda: 0.0) as w:
            assert not w.live
            with w.group(2):
                assert progress._LISTENER.get() is None
                progress.standing(2, 5.0)
            assert w.remaining() == (None, False) and w.finished == 2


def test_format_left() -> None:
    assert format_left(59.6, False) == "~0:01:00"
    assert format_left(0.0, True) == ">0:00:00"
    assert format_left(float("inf"), False) == "-:--:--"


# -- the attacks' reports ---------------------------------------------------------------------------------------------


def test_an_apgd_run_where_every_sample_breaks_in_the_first_step_has_nothing_left_for_its_other_steps() -> None:
    clf, x, y = linear()
    rec = Recording()
    # eps 2 > every sample's distance to the boundary: the first step (2 eps, to the ball's vertex) breaks all
    attack = APGD(steps=10, random_start=False, loss="ce")
    res = attack(clf, x, y, ThreatModel("linf", 2.0), generator=gen(), progress=rec)
    assert bool(res.success.all())
    lefts = [left for d, _, left, _, _ in rec.log]
    n = len(x)
    # the group opens (unknown), the run starts (11 evaluations of 2 passes), step 1 (10 left), step 2: none stand
    assert lefts[:4] == [None, n * 11 * 2, n * 10 * 2, 0.0]
    assert rec.log[3][1] == 0  # samples standing
    assert all(left == 0.0 for left in lefts[3:])  # nothing more to spend for the other 8 steps
    assert rec.lines == [f"apgd linf eps=2: 0 of {n} standing"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "attack",
    [
        APGD(steps=8, restarts=3),
        APGD(steps=8, restarts=4, restart_budget=0.5),
        APGDTargeted(steps=6, n_targets=3),
        PGD(steps=6, restarts=2),
        DeepFool(steps=6),
        Square(max_queries=40, restarts=2),
        CarliniWagnerL2(steps=30, binary_search_steps=3),
    ],
    ids=["apgd", "apgd-budget", "apgd-t", "pgd", "deepfool", "square", "cw"],
)
def test_inside_one_batch_the_work_left_only_falls_as_samples_break(seed: int, attack: Any) -> None:
    clf, x, y = blobs(seed)
    rec = Recording()
    threat = ThreatModel("l2", 0.4) if attack.name == "cw-l2" else ThreatModel("linf", 0.15)
    res = attack(clf, x, y, threat, generator=gen(seed), progress=rec, stop_at_eps=True)
    lefts = [left for _, _, left, _, _ in rec.log if left is not None]
    standing = [s for _, s, _, _, _ in rec.log[:-1]]
    assert len(lefts) >= 3  # the first report, the batch done, the verified end
    assert all(b <= a for a, b in itertools.pairwise(lefts)), lefts
    assert all(b <= a for a, b in itertools.pairwise(standing) if a is not None and b is not None)
    assert standing[-1] is not None and standing[0] is not None and standing[-1] < standing[0]  # samples broke
    assert lefts[-1] == 0.0
    assert rec.log[-1][1] == int(res.robust[res.pred_clean == y].sum())  # the verified count at the end


def test_with_several_batches_the_samples_left_are_priced_at_the_measured_cost_per_sample() -> None:
    clf, x, y = blobs(0, batch_size=60)
    ends: list[tuple[int, float, float | None]] = []

    class Ends(Recording):
        def _record(self, w: Work) -> None:
            if w._group is None:  # a batch done (or the attack)
                ends.append((w.finished, w.spent(), w.left))

    res = APGD(steps=8)(clf, x, y, ThreatModel("linf", 0.15), generator=gen(), progress=Ends())
    attacked = int((res.pred_clean == y).sum())
    assert [f for f, _, _ in ends] == [60, 120, 180, attacked, attacked]
    for finished, spent, left in ends:
        assert left == pytest.approx(spent / finished * (attacked - finished))


def test_progress_changes_nothing_the_attack_computes_and_task_only_callers_see_what_they_saw() -> None:
    clf, x, y = blobs(1)
    threat = ThreatModel("linf", 0.15)
    for attack in (APGD(steps=6, restarts=2), APGDTargeted(steps=5, n_targets=2), FGSM()):
        runs = []
        for p in (NullProgress(), Recording(), TaskOnly()):
            before = (clf.queries, clf.gradient_queries)
            res = attack(clf, x, y, threat, generator=gen(3), progress=p)
            runs.append((res, clf.queries - before[0], clf.gradient_queries - before[1], p))
        (a, qa, ga, _), (b, qb, gb, _), (c, qc, gc, task_only) = runs
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.x_adv, c.x_adv)
        assert qa == qb == qc and ga == gb == gc  # no extra forward or backward pass
        assert a.cost == b.cost == c.cost
        attacked = int((a.pred_clean == y).sum())
        assert isinstance(task_only, TaskOnly)
        ((description, total, advances),) = task_only.tasks
        assert description == f"{attack.name} linf eps=0.15" and total == attacked and sum(advances) == attacked


# -- the audit's plan -------------------------------------------------------------------------------------------------


def test_the_plan_prices_later_attacks_on_the_survivors_at_their_measured_cost_and_changes_nothing() -> None:
    clf, x, y = blobs(2)
    attacks: list[EvasionAttack] = [APGD(steps=6), APGDTargeted(steps=4, n_targets=2)]
    rec = Recording()
    run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[0.05, 0.15], generator=gen(), progress=rec)
    plain = evaluate_robustness(clf, x, y, attacks=attacks, eps=[0.05, 0.15], generator=gen(), progress=None)
    assert run.result.robust_accuracy == plain.result.robust_accuracy
    for e in (0.05, 0.15):
        assert torch.equal(run.x_adv[e], plain.x_adv[e])
    plan = "evasion linf eps 0.05,0.15"
    assert [line.split(":")[0] for line in rec.lines] == [
        "apgd linf eps=0.05",
        "apgd-t linf eps=0.05",
        "apgd linf eps=0.15",
        "apgd-t linf eps=0.15",
        plan,
    ]
    assert rec.lines[-1] == f"{plan}: {int(run.robust[0.15].sum())} of {len(x)} standing"
    # while an attack runs, the plan's estimate is its work left plus the later attacks at their measured cost per
    # sample on the samples it leaves standing: apgd-t at 0.15 is priced at what it cost per sample at 0.05
    t = next(r.cost for r in run.result.results if r.attack == "apgd-t" and r.eps == 0.05)
    assert t is not None and t.attacked
    per_sample = (t.forward + t.backward) / t.attacked
    checked = 0
    for description, standing, left, _, parent in rec.log:
        if left is None or standing is None or description == plan:
            continue
        if description == "apgd linf eps=0.15":
            assert parent == pytest.approx(left + standing * per_sample)
            checked += 1
        if description == "apgd-t linf eps=0.15":
            assert parent == left  # nothing after it
            checked += 1
    assert checked > 5


def test_the_plan_estimate_is_a_lower_bound_while_a_later_attack_has_never_run() -> None:
    clf, x, y = blobs(2)
    lower: dict[str, list[bool]] = {}

    class Watching(Recording):
        def _record(self, w: Work) -> None:
            if w.parent is not None and w.left is not None:  # the part under way has an estimate of its own
                lower.setdefault(w.description, []).append(w.parent.remaining()[1])

    attacks: list[EvasionAttack] = [APGD(steps=6), APGDTargeted(steps=4, n_targets=2)]
    evaluate_robustness(clf, x, y, attacks=attacks, eps=[0.05, 0.15], generator=gen(), progress=Watching())
    assert all(lower["apgd linf eps=0.05"])  # apgd-t has not run yet
    assert all(lower["apgd-t linf eps=0.05"])  # apgd-t at 0.15: its cost is being measured now
    assert not any(lower["apgd linf eps=0.15"])  # every attack measured: an estimate, not a bound
    assert not any(lower["apgd-t linf eps=0.15"])


# -- the output --------------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_is_a_line_per_finished_task_with_the_samples_standing_and_quiet_prints_nothing() -> None:
    clf, x, y = blobs(0)
    stream = io.StringIO()
    run = evaluate_robustness(
        clf, x, y, attacks=[FGSM()], eps=[0.15], generator=gen(), progress=RichProgress(stream=stream)
    )
    standing = int(run.robust[0.15].sum())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("fgsm linf eps=0.15: done in ") and lines[0].endswith(
        f"s, {standing} of {int(run.pred_clean.eq(y).sum())} standing"
    )
    assert lines[1].startswith("evasion linf eps 0.15: done in ")
    assert lines[1].endswith(f"{standing} of {len(x)} standing")
    with RichProgress(stream=stream).task("epoch 1/2", total=3) as advance:
        advance(3)
    assert stream.getvalue().splitlines()[-1].startswith("epoch 1/2: done in ")
    quiet = io.StringIO()
    evaluate_robustness(clf, x, y, attacks=[FGSM()], eps=[0.15], generator=gen(), progress=RichProgress(quiet, True))
    assert quiet.getvalue() == ""


def test_a_terminal_shows_the_plan_and_the_attack_under_way_and_leaves_a_line_per_finished_task() -> None:
    clf, x, y = blobs(0)
    stream = Terminal()
    shown = RichProgress(stream=stream)
    assert shown.listens()
    evaluate_robustness(clf, x, y, attacks=[APGD(steps=4), FGSM()], eps=[0.15], generator=gen(), progress=shown)
    with shown.task("epoch 1/2", total=3) as advance:
        shown.note("a note [not markup]")
        advance(3)
    out = stream.getvalue()
    for line in ("apgd linf eps=0.15: done in", "fgsm linf eps=0.15: done in", "evasion linf eps 0.15: done in"):
        assert out.count(line) == 1
    assert "a note [not markup]" in out and "epoch 1/2: done in" in out
    assert shown._bar is None  # the live display closed with the outermost task
