"""The evasion audit: clean accuracy, each attack at each epsilon, and the per-sample worst case.

Robust accuracy at an epsilon is the fraction of samples that every attack failed to break (AutoAttack's
per-sample worst case, Croce & Hein 2020). Epsilons are run in increasing order and an example that broke a
sample at a smaller epsilon also lies inside every larger ball, so that sample is not attacked again.

Each entry records the seconds and passes its attack spent against their floor (``AttackRobustness.cost``,
:mod:`modelsec.attacks.cost`); a minimum-norm attack whose distances this run does not need (a later attack of a
chain, a later epsilon) stops refining a sample once it is adversarial inside the ball (``stop_at_eps``).

Progress: the plan (every attack at every epsilon) is one task whose work left is the attack under way's plus each
later attack on the samples standing, at the passes per attacked sample it spent when it last ran (a lower bound
until every attack has run once; :mod:`modelsec.core.progress`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from modelsec.attacks.base import EvasionAttack, EvasionResult, ThreatModel
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.records import from_dict
from modelsec.core.resume import resumable, unsaved
from modelsec.models.base import Capability, Classifier
from modelsec.results.audit import (
    AttackCost,
    AttackProbe,
    AttackRobustness,
    MinNormStats,
    RobustnessResult,
    eps_key,
)
from modelsec.stats.metrics import rate_with_ci

# An attack run as a probe vouches (95%) for at most this share of the audit's records unbroken (probe_size).
PROBE_BOUND = 0.01


@dataclass
class RobustnessRun:
    """The typed result plus the per-sample arrays behind it."""

    result: RobustnessResult
    x: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    x_adv: dict[float, torch.Tensor]  # eps -> worst-case adversarial inputs
    robust: dict[float, torch.Tensor]  # eps -> per-sample robust flags (worst case)
    pred_adv: dict[float, torch.Tensor]  # eps -> predictions on the worst-case adversarial inputs
    per_attack_robust: dict[tuple[str, float], torch.Tensor]  # chain: cumulative robust flags after the attack
    per_attack_broken: dict[tuple[str, float], torch.Tensor]  # the samples this attack itself broke
    # minimum-norm attacks: per-sample verified minimal distance (0 where misclassified, inf where none found)
    min_distance: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``adversarial.npz`` (written by :mod:`modelsec.outputs.audit`, no pickle): the clean inputs
        ``x``, labels ``y``, clean predictions and the sorted ``eps``; per epsilon ``i``, the worst-case adversarial
        examples ``x_adv_i``, the per-sample robust flags ``robust_i`` and the predictions ``pred_adv_i``."""
        arrays: dict[str, np.ndarray] = {
            "x": self.x.numpy(),
            "y": self.y.numpy(),
            "pred_clean": self.pred_clean.numpy(),
            "eps": np.array(sorted(self.x_adv), dtype=np.float64),
        }
        for i, eps in enumerate(sorted(self.x_adv)):
            arrays[f"x_adv_{i}"] = self.x_adv[eps].numpy()
            arrays[f"robust_{i}"] = self.robust[eps].numpy()
            arrays[f"pred_adv_{i}"] = self.pred_adv[eps].numpy()
        return arrays

    def state_dict(self) -> dict[str, Any]:
        """Everything, as tensors and plain values (for a checkpoint read with ``torch.load(weights_only=True)``)."""
        return {
            "result": dataclasses.asdict(self.result),
            "x": self.x,
            "y": self.y,
            "pred_clean": self.pred_clean,
            "x_adv": self.x_adv,
            "robust": self.robust,
            "pred_adv": self.pred_adv,
            "per_attack_robust": [[label, e, t] for (label, e), t in self.per_attack_robust.items()],
            "per_attack_broken": [[label, e, t] for (label, e), t in self.per_attack_broken.items()],
            "min_distance": dict(self.min_distance),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RobustnessRun:
        return cls(
            result=RobustnessResult.from_dict(state["result"]),
            x=state["x"],
            y=state["y"],
            pred_clean=state["pred_clean"],
            x_adv=dict(state["x_adv"]),
            robust=dict(state["robust"]),
            pred_adv=dict(state["pred_adv"]),
            per_attack_robust={(label, e): t for label, e, t in state["per_attack_robust"]},
            per_attack_broken={(label, e): t for label, e, t in state["per_attack_broken"]},
            min_distance=dict(state.get("min_distance", {})),
        )


def evaluate_robustness(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks: list[EvasionAttack],
    eps: list[float],
    norm: str = "linf",
    generator: torch.Generator,
    progress: Progress | None = None,
    chain: bool = True,
    records: int | None = None,
) -> RobustnessRun:
    """Run the attacks at every epsilon on ``(x, y)``; sanity checks are added by :mod:`modelsec.audits.sanity`.
    Clean predictions and the re-classification of every adversarial example both use ``classifier.predict`` (a
    majority vote for a randomised model: ``Classifier.votes``), so clean and robust accuracy share one definition.

    ``chain=True`` (AutoAttack's protocol): each attack runs only on the samples that every earlier attack left
    standing, and an attack's entry is the robust accuracy after it and every attack before it. ``chain=False``:
    each attack runs on every sample, and its entry is its own robust accuracy (slower; for comparing attacks).

    In a chain, an attack with ``probe=True`` runs as a probe (:func:`probe_size`); ``records``: the audit's
    records, of which ``(x, y)`` may be one block (:mod:`modelsec.audits.sharding`), which size the probes (default:
    ``len(x)``).
    """
    progress = progress or NullProgress()
    eps_sorted = sorted({float(e) for e in eps})
    n = x.shape[0]
    records = n if records is None else records
    labels = attack_labels(attacks)
    # the plan: every attack at every eps, then (chain) the minimum-norm pass; a checkpoint is written before each
    plan: list[tuple[float | None, int]] = [(e, i) for e in eps_sorted for i in range(len(attacks))]
    if chain:  # minimal-perturbation statistics need every correct sample: run gradient min-norm attacks once
        plan += [(None, i) for i, a in enumerate(attacks) if a.minimum_norm and a.requires == Capability.GRADIENTS]

    # the time left (issue 16): each later attack on the samples standing, at its cost per sample measured so far
    overall = progress.work(
        f"evasion {norm} eps {','.join(f'{e:g}' for e in eps_sorted)}",
        total=len(plan),
        spent=lambda: classifier.queries + classifier.gradient_queries,
    )
    per_sample: dict[str, float] = {}  # passes per attacked sample of each attack run so far (progress estimate)
    # the share of the samples standing each attack will attack: a probe's draw (if it breaks nothing), else all
    shares = {
        label: probe_share(records) if chain and getattr(a, "probe", False) else 1.0
        for label, a in zip(labels, attacks, strict=True)
    }
    with resumable("robustness") as frame, overall as plan_work:
        if frame.restored is None:
            pred_clean = classifier.predict(x)
            entries: list[AttackRobustness] = []
            per_attack: dict[tuple[str, float], torch.Tensor] = {}
            per_attack_broken: dict[tuple[str, float], torch.Tensor] = {}
            worst_robust: dict[float, torch.Tensor] = {}
            worst_adv: dict[float, torch.Tensor] = {}
            carried_adv: dict[str, torch.Tensor] = {label: x.clone() for label in labels}
            carried_robust: dict[str, torch.Tensor] = {label: pred_clean == y for label in labels}
            min_dist: dict[str, torch.Tensor] = {}
            min_cost: dict[str, tuple[float, AttackCost | None]] = {}  # the minimum-norm passes' seconds and cost
            robust_all, adv_all = pred_clean == y, x.clone()
            elapsed = 0.0
        else:
            saved = frame.restored
            pred_clean = saved["pred_clean"]
            entries = [from_dict(AttackRobustness, d) for d in saved["entries"]]
            per_attack = {(label, e): t for label, e, t in saved["per_attack"]}
            per_attack_broken = {(label, e): t for label, e, t in saved["per_attack_broken"]}
            worst_robust, worst_adv = dict(saved["worst_robust"]), dict(saved["worst_adv"])
            carried_adv, carried_robust = dict(saved["carried_adv"]), dict(saved["carried_robust"])
            min_dist = dict(saved["min_dist"])
            min_cost = {
                label: (float(sec), None if c is None else AttackCost(**c))
                for label, (sec, c) in saved.get("min_cost", {}).items()
            }
            robust_all, adv_all = saved["robust_all"], saved["adv_all"]
            elapsed = float(saved["elapsed"])  # of the step under way: its entry's seconds include them
        correct_t = pred_clean == y
        start = time.perf_counter() - elapsed
        frame.capture(
            lambda: {
                "elapsed": time.perf_counter() - start,
                "pred_clean": pred_clean,
                "entries": [dataclasses.asdict(a) for a in entries],
                "per_attack": [[label, e, t] for (label, e), t in per_attack.items()],
                "per_attack_broken": [[label, e, t] for (label, e), t in per_attack_broken.items()],
                "worst_robust": worst_robust,
                "worst_adv": worst_adv,
                "carried_adv": carried_adv,
                "carried_robust": carried_robust,
                "min_dist": min_dist,
                "min_cost": {k: (sec, c and dataclasses.asdict(c)) for k, (sec, c) in min_cost.items()},
                "robust_all": robust_all,
                "adv_all": adv_all,
            },
            where=lambda k: _where(plan, k, labels),
        )
        plan_work.advance(int(frame.restored["position"]) if frame.restored is not None else 0)
        for entry in entries:  # resumed: the attacks' costs so far
            if entry.cost is not None and entry.cost.attacked:
                per_sample[entry.attack] = (entry.cost.forward + entry.cost.backward) / entry.cost.attacked
        for k in frame.steps(0, len(plan), force=True):
            e_or_none, i = plan[k]
            label, attack = labels[i], attacks[i]
            counts = None if chain else {j: int(carried_robust[a].sum()) for j, a in enumerate(labels)}
            plan_work.later = partial(
                _later_passes, plan[k + 1 :], labels, per_sample, counts, int(correct_t.sum()), shares
            )
            if e_or_none is None:  # the minimum-norm pass, on every correctly classified sample
                todo = correct_t.nonzero().flatten()
                if todo.numel() and label not in min_dist:
                    threat = ThreatModel(norm, eps_sorted[0])
                    res = attack(classifier, x[todo], y[todo], threat, generator=generator, pred_clean=pred_clean[todo])
                    assert res.min_distance is not None
                    d = torch.full((n,), torch.inf)
                    d[~correct_t] = 0.0
                    d[todo] = res.min_distance
                    min_dist[label] = d
                    min_cost[label] = (time.perf_counter() - start, res.cost)
                start = time.perf_counter()
                plan_work.advance(1)
                continue
            e = e_or_none
            threat = ThreatModel(norm=norm, eps=e)
            if i == 0:  # a new eps
                previous = eps_sorted.index(e) - 1
                if chain and previous >= 0:  # broken at a smaller eps -> broken here, with the same example
                    robust_all = worst_robust[eps_sorted[previous]].clone()
                    adv_all = worst_adv[eps_sorted[previous]].clone()
                else:
                    robust_all, adv_all = correct_t.clone(), x.clone()
            if chain:  # AutoAttack-style: only what every earlier attack left standing
                robust, adv = robust_all, adv_all
            else:  # every attack on every sample it has not broken at a smaller eps
                robust, adv = carried_robust[label].clone(), carried_adv[label].clone()
            todo = robust.nonzero().flatten()
            broken = torch.zeros(n, dtype=torch.bool)
            cost: AttackCost | None = AttackCost(0, 0, 0, 0, 0)
            # a minimum-norm attack refines its distances only where they become the minimum-norm statistics
            distances = attack.minimum_norm and label not in min_dist and todo.numel() == int(correct_t.sum())
            plan_work.standing = todo.numel()
            probe: AttackProbe | None = None
            if todo.numel():
                run_on = partial(
                    _attack_samples, attack, classifier, x, y, pred_clean, threat, generator, progress, distances
                )
                size = probe_size(todo.numel(), records) if chain and getattr(attack, "probe", False) else todo.numel()
                if size < todo.numel() and not distances:  # a probe: a seeded draw first, the rest on a break
                    order = torch.randperm(todo.numel(), generator=generator)
                    drawn, rest = todo[order[:size]].sort().values, todo[order[size:]].sort().values
                    with unsaved():  # two runs of one attack in one step: an interrupted probe starts again
                        runs = [(drawn, run_on(drawn))]
                        hits = int(runs[0][1].success.sum())
                        if hits:
                            runs.append((rest, run_on(rest)))
                    skipped = 0 if hits else rest.numel()
                    probe = AttackProbe(todo.numel(), size, hits, skipped, 0 if hits else size)
                else:
                    runs = [(todo, run_on(todo))]
                cost = _summed([res.cost for _, res in runs])
                if cost is not None and cost.attacked:
                    per_sample[label] = (cost.forward + cost.backward) / cost.attacked
                for idx, res in runs:
                    adv[idx] = res.x_adv
                    robust[idx] = res.robust
                    broken[idx] = res.success
                res = runs[0][1]
                if res.min_distance is not None and distances:
                    # this run attacked every correctly classified sample: its distances are complete
                    d = torch.full((n,), torch.inf)
                    d[~correct_t] = 0.0
                    d[todo] = res.min_distance
                    min_dist[label] = d
            if not chain:
                carried_robust[label], carried_adv[label] = robust, adv
                newly_broken = robust_all & ~robust
                adv_all[newly_broken] = adv[newly_broken]
                robust_all &= robust
            per_attack[(label, e)] = robust.clone()
            per_attack_broken[(label, e)] = broken
            rate, ci = rate_with_ci(robust.numpy())
            entries.append(
                AttackRobustness(
                    attack=label,
                    norm=norm,
                    eps=e,
                    robust_accuracy=rate,
                    ci_low=ci.low,
                    ci_high=ci.high,
                    n=n,
                    seconds=time.perf_counter() - start,
                    params=attack.params(),
                    cost=cost,
                    probe=probe,
                )
            )
            if i == len(attacks) - 1:  # the last attack at this eps
                worst_robust[e] = robust_all
                worst_adv[e] = adv_all
            start = time.perf_counter()  # the next step starts here (its save point is the first thing it does)
            plan_work.advance(1)
        if eps_sorted:
            plan_work.finish(int(worst_robust[eps_sorted[-1]].sum()), of=n)

    clean_acc, clean_ci = rate_with_ci(correct_t.numpy())
    robust_accuracy: dict[str, float] = {}
    robust_ci = {}
    for e in eps_sorted:
        rate, ci = rate_with_ci(worst_robust[e].numpy())
        robust_accuracy[eps_key(e)] = rate
        robust_ci[eps_key(e)] = ci
    result = RobustnessResult(
        min_norm=[
            min_norm_stats(label, norm, d, correct_t, *min_cost.get(label, (None, None)))
            for label, d in min_dist.items()
        ],
        n=n,
        clean_accuracy=clean_acc,
        clean_ci=clean_ci,
        results=entries,
        robust_accuracy=robust_accuracy,
        robust_ci=robust_ci,
        chain=chain,
        flags=[],
        checks=[],
        prediction=classifier.prediction_rule,
    )
    return RobustnessRun(
        result=result,
        x=x,
        y=y,
        pred_clean=pred_clean,
        x_adv=worst_adv,
        robust=worst_robust,
        pred_adv={e: classifier.predict(worst_adv[e]) for e in eps_sorted},
        per_attack_robust=per_attack,
        per_attack_broken=per_attack_broken,
        min_distance=min_dist,
    )


def probe_size(standing: int, records: int) -> int:
    """How many of the ``standing`` samples an attack run as a probe attacks first (a seeded draw): the share
    ``3 / (PROBE_BOUND * records)`` of them, all of them for an audit of at most 300 records.

    The attack then runs on the rest only if the draw gave a break. When it gave none, the rest stand unattacked,
    and with 95% confidence the attack would have broken at most ``3 / drawn`` of them (the rule of three,
    :meth:`~modelsec.results.audit.AttackProbe.bound`): at most ``standing * 3 / drawn = PROBE_BOUND * records``,
    1% of the audit's records, the black-box-beats-white-box check's threshold (:mod:`modelsec.audits.sanity`).
    With the same share in every block of records, the draws of the blocks pool to the same bound.

    Why a probe (issue 16): on a model whose gradients the pre-attack checks found clean, the gradient chain
    breaks what a black-box attack would, and Square's 5,000 queries a sample then break nothing: on the bundled
    CNN (1000 test images, eps 0.03), 489 of the audit's 740 s of robustness went to Square on the 390 images the
    gradient chain left, and it broke none of them; over the 12 benchmark-zoo models measured against AutoAttack it
    broke nothing in the chain except where it ran first (benchmarks/README.md). A model with masked gradients gets
    the black-box attacks in full (the audit turns the probe off when a pre-attack check fires).

    >>> probe_size(390, 1000), probe_size(10, 1000), probe_size(390, 300), probe_size(50, 10_000)
    (117, 3, 390, 2)
    """
    return min(standing, math.ceil(standing * probe_share(records) - 1e-9))


def probe_share(records: int) -> float:
    """The share of the samples standing that an attack run as a probe draws in an audit of ``records`` records
    (:func:`probe_size`).

    >>> probe_share(1000), probe_share(300), probe_share(10_000)
    (0.3, 1.0, 0.03)
    """
    return min(1.0, 3.0 / (PROBE_BOUND * records))


def _attack_samples(
    attack: EvasionAttack,
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    pred_clean: torch.Tensor,
    threat: ThreatModel,
    generator: torch.Generator,
    progress: Progress,
    distances: bool,
    idx: torch.Tensor,
) -> EvasionResult:
    """``attack`` on the samples ``idx`` (every one still standing, so classified correctly)."""
    return attack(
        classifier,
        x[idx],
        y[idx],
        threat,
        generator=generator,
        progress=progress,
        stop_at_eps=not distances,
        pred_clean=pred_clean[idx],
    )


def concatenate_runs(runs: list[RobustnessRun], norm: str) -> RobustnessRun:
    """One run of the records of ``runs``, in their order: the per-sample arrays concatenated, and every rate and
    interval recomputed from the concatenated flags (an attack's ``seconds`` summed). A minimum-norm attack's
    statistics are kept when every run has its distances (a run without correctly classified samples needs none).
    Sanity flags are not merged: the checks run on the concatenated run."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    y = torch.cat([r.y for r in runs])
    pred_clean = torch.cat([r.pred_clean for r in runs])
    eps_sorted = sorted(first.x_adv)
    robust = {e: torch.cat([r.robust[e] for r in runs]) for e in eps_sorted}
    per_attack = {k: torch.cat([r.per_attack_robust[k] for r in runs]) for k in first.per_attack_robust}
    per_attack_broken = {k: torch.cat([r.per_attack_broken[k] for r in runs]) for k in first.per_attack_broken}
    entries = []
    for i, entry in enumerate(first.result.results):
        rate, ci = rate_with_ci(per_attack[(entry.attack, entry.eps)].numpy())
        seconds = sum(r.result.results[i].seconds for r in runs)
        cost = _summed([r.result.results[i].cost for r in runs])
        probes = [p for r in runs if (p := r.result.results[i].probe) is not None]
        probe = None if not probes else functools.reduce(operator.add, probes)
        entries.append(
            dataclasses.replace(
                entry,
                robust_accuracy=rate,
                ci_low=ci.low,
                ci_high=ci.high,
                n=len(y),
                seconds=seconds,
                cost=cost,
                probe=probe,
            )
        )
    labels = list(dict.fromkeys(label for r in runs for label in r.min_distance))
    min_distance = {
        label: torch.cat([r.min_distance.get(label, torch.zeros(len(r.y))) for r in runs])
        for label in labels
        if all(label in r.min_distance or not bool((r.pred_clean == r.y).any()) for r in runs)
    }
    correct = pred_clean == y
    clean_acc, clean_ci = rate_with_ci(correct.numpy())
    robust_ci = {eps_key(e): rate_with_ci(robust[e].numpy()) for e in eps_sorted}
    passes = {label: [s for r in runs for s in r.result.min_norm if s.attack == label] for label in min_distance}
    min_cost = {
        label: (sum(s.seconds for s in stats if s.seconds is not None), _summed([s.cost for s in stats]))
        for label, stats in passes.items()
        if stats and all(s.seconds is not None for s in stats)
    }
    result = dataclasses.replace(
        first.result,
        n=len(y),
        clean_accuracy=clean_acc,
        clean_ci=clean_ci,
        results=entries,
        robust_accuracy={k: rate for k, (rate, _) in robust_ci.items()},
        robust_ci={k: ci for k, (_, ci) in robust_ci.items()},
        min_norm=[
            min_norm_stats(label, norm, d, correct, *min_cost.get(label, (None, None)))
            for label, d in min_distance.items()
        ],
        flags=[],
        checks=[],
    )
    return RobustnessRun(
        result=result,
        x=torch.cat([r.x for r in runs]),
        y=y,
        pred_clean=pred_clean,
        x_adv={e: torch.cat([r.x_adv[e] for r in runs]) for e in eps_sorted},
        robust=robust,
        pred_adv={e: torch.cat([r.pred_adv[e] for r in runs]) for e in eps_sorted},
        per_attack_robust=per_attack,
        per_attack_broken=per_attack_broken,
        min_distance=min_distance,
    )


def _where(plan: list[tuple[float | None, int]], step: int, labels: list[str]) -> str:
    """Progress description of the plan's step ``step``: the epsilons done and the attack under way."""
    done = sorted({e for e, _ in plan[:step] if e is not None} - {e for e, _ in plan[step:] if e is not None})
    parts = [f"robustness done for eps {', '.join(f'{e:g}' for e in done)}"] if done else []
    e, i = plan[step]
    parts.append(f"{labels[i]} at eps {e:g}" if e is not None else f"{labels[i]} minimum-norm pass")
    return "; ".join(parts)


def _later_passes(
    rest: list[tuple[float | None, int]],
    labels: list[str],
    per_sample: dict[str, float],
    counts: dict[int, int] | None,
    correct: int,
    shares: dict[str, float],
    standing: int,
) -> tuple[float, bool]:
    """Progress estimate: the passes of the plan's steps ``rest`` (after the one under way), each attack on the
    samples standing (chained: the ``standing`` the current attack leaves, an upper bound at a larger eps;
    unchained: each attack's own survivors, ``counts``; the minimum-norm pass: every ``correct`` sample), times its
    share of them (``shares``: a probe's draw) at its passes per attacked sample measured so far. A lower bound
    (True) while an attack of ``rest`` has not run yet."""
    passes, unknown = 0.0, False
    for e, i in rest:
        each = per_sample.get(labels[i])
        if each is None:
            unknown = True
            continue
        passes += each * (correct if e is None else standing * shares[labels[i]] if counts is None else counts[i])
    return passes, unknown


def attack_labels(attacks: list[EvasionAttack]) -> list[str]:
    """Each attack's report label, made unique (``apgd``, ``apgd-dlr``, ``pgd#2``)."""
    seen: dict[str, int] = {}
    labels = []
    for a in attacks:
        seen[a.label] = seen.get(a.label, 0) + 1
        labels.append(a.label if seen[a.label] == 1 else f"{a.label}#{seen[a.label]}")
    return labels


def _summed(costs: list[AttackCost | None]) -> AttackCost | None:
    """The sum of the costs of the same attack on several blocks of records (``None`` if one is unknown)."""
    known = [c for c in costs if c is not None]
    if len(known) < len(costs) or not known:
        return None
    total = known[0]
    for c in known[1:]:
        total = total + c
    return total


def min_norm_stats(
    label: str,
    norm: str,
    distance: torch.Tensor,
    correct: torch.Tensor,
    seconds: float | None = None,
    cost: AttackCost | None = None,
) -> MinNormStats:
    """Summary of the verified minimal distances over the correctly classified samples (with the seconds and cost
    of the minimum-norm pass that found them, when the audit ran one)."""
    d = distance[correct].double().numpy()
    found = d[np.isfinite(d)]
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    quantiles = {repr(q): float(np.quantile(found, q)) for q in qs} if found.size else {}
    return MinNormStats(
        attack=label,
        norm=norm,
        n=int(d.size),
        found=int(found.size),
        median=float(np.median(found)) if found.size else None,
        mean=float(found.mean()) if found.size else None,
        quantiles=quantiles,
        seconds=seconds,
        cost=cost,
    )
