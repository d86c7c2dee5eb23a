"""modelsec's membership-inference attacks against each other and against the Adversarial Robustness Toolbox (ART).

Issue 4's benchmark. An overfit target: the built-in ``small-cnn``, trained (Adam, lr 1e-3, batch 128, cosine
schedule, ``--epochs`` epochs) on the first ``--train-size`` records of the Fashion-MNIST members split of
``load_splits("fashion-mnist", seed=0)``; the issue expects about 100% train and 85% test accuracy at 2000 records.
Members are those records, non-members the 10,000 test records, and the population split (10,000 more training
images) is the attacker's own data. ``--candidates`` members and as many non-members (all members by default) are
drawn with ``build_pool`` (records whose input also occurs in another split are left out, as the audit does) and
scored by every registered modelsec attack that the inputs allow:

- no reference models: the metric attacks (loss, confidence, entropy, modified entropy) and label-only (10
  augmented queries per record);
- 1 reference model, offline (trained on population records only; the candidates are OUT of it): LiRA offline,
  RMIA offline, the shadow-model attack. One model cannot be online (a record needs IN and OUT models);
- K = the largest of ``--reference-models`` online reference models, trained ONCE on the candidates and
  population records with the same recipe as the target (each record IN exactly half of them), then every attack
  that needs reference models, online and offline, with the first 2, 4, ..., K of them: the membership matrix is
  built from complementary pairs, so every even prefix is balanced and the first k models do not depend on K.

Each attack is summarised with ``modelsec.audits.membership.summarise_membership``: AUC with a bootstrap interval, TPR
at 0.1% / 1% / 10% FPR with exact (Clopper-Pearson) intervals, the empirical epsilon lower bound. Seconds are
split: ``scoring`` is the attack on cached signals (label-only: plus its augmented queries), the target's own
forward pass on the pool is timed once (``target_signals_seconds``), and reference training is reported apart,
per model (``reference_training_seconds`` of an entry = the summed training time of the models it used, in their
processes) and as the wall time of training all of them with ``--workers`` processes.

ART peer: ``MembershipInferenceBlackBox`` (input_type "prediction": the target's logits plus the one-hot label) with
attack_model_type "nn" (ART's default) and "rf", on an ART ``PyTorchClassifier`` around a copy of the target. As
ART documents, the attack model is fitted on records whose membership the attacker knows: ``fit(x, y, test_x,
test_y)`` with a seeded half (``--art-fit-fraction``) of the candidate members and of the candidate non-members,
and ``infer(x, y, probabilities=True)`` scores the other half. Its seconds are fit + infer, target queries
included. ART's attacker therefore knows part of the target's real training set, which modelsec's attackers never
do (they have only population data and reference models), and can be judged only on the held-out half: the second
table scores every attack, modelsec's and ART's, on exactly those held-out records (modelsec's scores come from the
same run on the whole pool, restricted to them), so that the peers are compared on the same records.

Acceptance (issue 4), on all candidates: LiRA and RMIA (online, K reference models) beat ``loss-threshold`` on AUC
and on TPR at 1% FPR; at 0.1% FPR the better of them has a TPR lower confidence bound above 0.001; RMIA with 2
reference models is at least LiRA with 2 (AUC and TPR at 1% FPR).

Results merge into ``--out`` per setup (train size, epochs, seed, candidates): the entries measured now replace
the same entries of an earlier run on the same target (same weights' sha256), the others are kept with their
date (``runs`` maps each date to its configuration and versions); ``--fresh`` overwrites the file.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/membership_vs_art.py
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py, beside this script
import numpy as np
import torch
from common import stopwatch
from torch import nn

import modelsec
from modelsec.attacks.membership import (
    MEMBERSHIP_ATTACKS,
    MembershipAttack,
    MembershipInputs,
    compute_signals,
)
from modelsec.attacks.membership.signals import ReferenceSignals
from modelsec.audits.membership import summarise_membership
from modelsec.audits.membership_pool import MembershipPool, build_pool, reference_signals
from modelsec.audits.reference_models import ReferenceConfig, ReferenceTraining
from modelsec.core.seeding import generator, seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses.training import TrainingConfig, accuracy, train_classifier
from modelsec.models.base import Classifier
from modelsec.models.zoo import build_architecture
from modelsec.results.audit import MembershipAttackResult
from modelsec.store.cache import SignalCache

HERE = Path(__file__).resolve().parent
ARCH = "small-cnn"
DATA = "fashion-mnist"
DATA_SPLIT_SEED = 0
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
FPR_KEYS = ("0.001", "0.01", "0.1")
BASELINE = "loss-threshold"
ALL = "candidates"  # evaluated on every candidate member and non-member
HELD_OUT = "art-held-out"  # evaluated on the candidates ART's attack model was not fitted on


def import_art() -> Any:
    return common.import_art("attacks.inference.membership_inference", "estimators.classification")


def log(message: str) -> None:
    print(message, flush=True)


# -- the target ---------------------------------------------------------------------------------------------------


def weights_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_target(splits: Splits, training: TrainingConfig, train_size: int) -> tuple[Classifier, Splits, dict]:
    """The overfit target and the audit's splits: its training records, the test split, the population split."""
    members = splits.members.subset(np.arange(min(train_size, len(splits.members))), name="target-train")
    with seeded(training.seed):
        module = build_architecture(ARCH, INPUT_SHAPE, NUM_CLASSES)
    with stopwatch() as t:
        train_classifier(module, members, config=training)
    module.eval()
    device = torch.device("cpu")
    info = {
        "arch": ARCH,
        "train_size": len(members),
        "training": dataclasses.asdict(training),
        "train_accuracy": accuracy(module, members, device),
        "test_accuracy": accuracy(module, splits.nonmembers, device),
        "training_seconds": t["seconds"],
        "sha256": weights_sha256(module),
    }
    classifier = Classifier(module, input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, bounds=splits.bounds)
    audit = Splits(
        source=splits.source,
        seed=splits.seed,
        members=members,
        nonmembers=splits.nonmembers,
        population=splits.population,
    )
    return classifier, audit, info


# -- modelsec's attacks -----------------------------------------------------------------------------------------


def summary(result: MembershipAttackResult) -> dict[str, Any]:
    """The metrics of one summary, without the ROC sketch."""
    d = dataclasses.asdict(result)
    for key in ("roc_fpr", "roc_tpr", "attack", "seconds"):
        d.pop(key)
    return d


def summarise(label: str, scores: np.ndarray, members: np.ndarray, nonmembers: np.ndarray, seconds: float) -> dict:
    return summary(
        summarise_membership(label, scores[members], scores[nonmembers], rng=np.random.default_rng(0), seconds=seconds)
    )


def attacks_for(reference: str) -> list[MembershipAttack]:
    """Every registered attack that can run with no reference models ("none"), offline ones ("offline") or online
    ones ("online"); the metric and label-only attacks only without, as they ignore reference models."""
    chosen = []
    for name in MEMBERSHIP_ATTACKS.names():
        cls = MEMBERSHIP_ATTACKS.get(name)
        wanted = {
            "none": not cls.needs_reference,
            "offline": cls.needs_reference and not cls.needs_online,
            "online": cls.needs_reference,
        }[reference]
        if wanted:
            chosen.append(cls())
    return chosen


def score_attacks(
    attacks: list[MembershipAttack],
    inputs: MembershipInputs,
    pool: MembershipPool,
    held_out: tuple[np.ndarray, np.ndarray],
    *,
    reference_models: int,
    reference_mode: str,
    reference_training_seconds: float,
    extra_seconds: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Score the pool with each attack and summarise it on all candidates and on ART's held-out candidates."""
    entries = []
    for attack in attacks:
        with stopwatch() as t:
            scores = attack(inputs)  # NaN only for population records it cannot judge; the candidates are judged
        seconds = t["seconds"] + (extra_seconds or {}).get(attack.label, 0.0)
        common = {
            "attack": attack.label,
            "library": "modelsec",
            "reference_models": reference_models,
            "reference_mode": reference_mode,
            "params": attack.params(),
            "seconds": seconds,
            "reference_training_seconds": reference_training_seconds,
        }
        for evaluated_on, (members, nonmembers) in ((ALL, (pool.members, pool.nonmembers)), (HELD_OUT, held_out)):
            entries.append(
                {
                    **common,
                    "evaluated_on": evaluated_on,
                    **summarise(attack.label, scores, members, nonmembers, seconds),
                }
            )
        auc = entries[-2]["auc"]
        tpr = entries[-2]["tpr_at_fpr"]["0.01"]
        log(f"  {attack.label:<17} refs {reference_models} ({reference_mode}): AUC {auc:.3f}, TPR@1% {tpr:.3f}")
    return entries


def training_entry(training: ReferenceTraining) -> dict[str, Any]:
    return {**training.compute(), "per_model_seconds": [round(s, 2) for s in training.seconds]}


def run_modelsec(
    args: argparse.Namespace,
    classifier: Classifier,
    audit: Splits,
    training: TrainingConfig,
    counts: list[int],
    cache: SignalCache | None,
    setup: dict[str, Any],
) -> tuple[list[dict[str, Any]], MembershipPool, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Every modelsec attack on the pool; returns the entries, the pool, and ART's (fit, held-out) candidates as
    (members, non-members) pool indices."""
    overlaps = audit.overlaps()
    exclude = any(overlaps.values())
    setup["split_overlaps"] = overlaps
    k_max = max(counts)
    online = None
    if k_max >= 2:
        online = ReferenceConfig(models=k_max, online=True, workers=args.workers, seed=args.seed)

    def pool_for(reference: ReferenceConfig | None) -> MembershipPool:
        return build_pool(
            audit,
            members=args.candidates,
            nonmembers=args.candidates,
            rng=np.random.default_rng(args.seed),
            reference=reference,
            target_train_size=len(audit.members),
            exclude_shared=exclude,
        )

    pool = pool_for(online)
    fit, held_out = art_split(pool, args.art_fit_fraction, args.seed)
    setup["pool"] = {
        "candidate_members": int(pool.members.size),
        "candidate_nonmembers": int(pool.nonmembers.size),
        "population_records": int(pool.population.size),
        "held_out_members": int(held_out[0].size),
        "held_out_nonmembers": int(held_out[1].size),
    }
    log(f"pool: {pool.members.size} members, {pool.nonmembers.size} non-members, {pool.population.size} population")
    with stopwatch() as t:
        target = compute_signals(classifier, pool.records)
    setup["target_signals_seconds"] = t["seconds"]

    entries: list[dict[str, Any]] = []
    # no reference models: the metric attacks and label-only (its augmented queries count as its time)
    plain = attacks_for("none")
    extra: dict[str, float] = {}
    for attack in plain:  # label-only: the augmented queries it declares
        augmentation = attack.augmentation()
        if augmentation is not None:
            with stopwatch() as t:
                target = augmentation.apply(target, classifier, pool.records.x, generator=generator(args.seed))
            extra[attack.label] = t["seconds"]
    log("attacks without reference models")
    entries += score_attacks(
        plain,
        MembershipInputs(target),
        pool,
        held_out,
        reference_models=0,
        reference_mode="none",
        reference_training_seconds=0.0,
        extra_seconds=extra,
    )

    setup["reference_training"] = {}
    if 1 in counts:  # one model cannot be online: one offline model, on its own pool (same candidates)
        offline = ReferenceConfig(models=1, online=False, workers=1, seed=args.seed)
        off_pool = pool_for(offline)
        n_cand = pool.members.size + pool.nonmembers.size
        if not np.array_equal(off_pool.records.x[:n_cand], pool.records.x[:n_cand]):
            raise RuntimeError("the offline pool's candidates differ from the online pool's")
        log(f"training 1 offline reference model on {off_pool.population.size} population records")
        trained = reference_signals(off_pool, offline, arch=ARCH, training=training, cache=cache)
        setup["reference_training"]["offline"] = training_entry(trained)
        off_target = compute_signals(classifier, off_pool.records)
        entries += score_attacks(
            attacks_for("offline"),
            MembershipInputs(off_target, trained.signals, online=False),
            off_pool,
            held_out,
            reference_models=1,
            reference_mode="offline",
            reference_training_seconds=float(sum(trained.seconds)),
        )

    if online is not None:
        log(
            f"training {online.models} online reference models ({args.workers} worker{'s' if args.workers > 1 else ''})"
        )
        trained = reference_signals(pool, online, arch=ARCH, training=training, cache=cache)
        setup["reference_training"]["online"] = training_entry(trained)
        log(f"  wall {trained.wall_seconds:.1f} s{' (from the cache)' if trained.cached else ''}")
        for k in sorted(c for c in counts if c >= 2):
            refs: ReferenceSignals = trained.signals.first_models(k)
            entries += score_attacks(
                attacks_for("online"),
                MembershipInputs(target, refs, online=True),
                pool,
                held_out,
                reference_models=k,
                reference_mode="online",
                reference_training_seconds=float(sum(trained.seconds[:k])),
            )
    return entries, pool, fit, held_out


# -- ART --------------------------------------------------------------------------------------------------------


def art_classifier(art: Any, module: nn.Module) -> Any:
    return art.estimators.classification.PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=INPUT_SHAPE,
        nb_classes=NUM_CLASSES,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def run_art(
    art: Any,
    module: nn.Module,
    pool: MembershipPool,
    fit: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray],
    model_type: str,
    seed: int,
) -> dict[str, Any]:
    """ART's black-box attack fitted on the ``fit`` members / non-members (pool indices), scored on ``held_out``."""
    x, y = pool.records.x, pool.records.y
    estimator = art_classifier(art, copy.deepcopy(module))
    attack = art.attacks.inference.membership_inference.MembershipInferenceBlackBox(
        estimator, input_type="prediction", attack_model_type=model_type
    )
    # ART's random forest draws from numpy's global generator, its nn attack model from torch's
    np.random.seed(seed)
    with seeded(seed):
        with stopwatch() as t_fit:
            attack.fit(x[fit[0]], y[fit[0]], x[fit[1]], y[fit[1]])
        with stopwatch() as t_infer:
            p_members = attack.infer(x[held_out[0]], y[held_out[0]], probabilities=True)
            p_nonmembers = attack.infer(x[held_out[1]], y[held_out[1]], probabilities=True)
    seconds = t_fit["seconds"] + t_infer["seconds"]
    scores = np.zeros(len(pool.records))
    scores[held_out[0]] = np.asarray(p_members, dtype=np.float64).reshape(-1)
    scores[held_out[1]] = np.asarray(p_nonmembers, dtype=np.float64).reshape(-1)
    label = f"ART black-box ({model_type})"
    entry = {
        "attack": label,
        "library": "art",
        "reference_models": 0,
        "reference_mode": "none",
        "params": {
            "class": "MembershipInferenceBlackBox",
            "input_type": "prediction",
            "attack_model_type": model_type,
            "fit_members": int(fit[0].size),
            "fit_nonmembers": int(fit[1].size),
        },
        "seconds": seconds,
        "fit_seconds": t_fit["seconds"],
        "infer_seconds": t_infer["seconds"],
        "reference_training_seconds": 0.0,
        "evaluated_on": HELD_OUT,
        **summarise(label, scores, held_out[0], held_out[1], seconds),
    }
    log(f"  {label}: AUC {entry['auc']:.3f}, TPR@1% {entry['tpr_at_fpr']['0.01']:.3f}, {seconds:.1f} s")
    return entry


# -- results ----------------------------------------------------------------------------------------------------


def entry_key(e: dict[str, Any]) -> tuple[str, int, str, str]:
    return (e["attack"], e["reference_models"], e["reference_mode"], e["evaluated_on"])


def merge_setup(previous: dict[str, Any], setup: dict[str, Any]) -> None:
    """Add to ``setup`` the previous run's entries of the same setup that were not rerun now (and the reference
    training and run configuration they came from), provided the target is the same (same weights' sha256)."""
    if not previous:
        return
    if previous.get("target", {}).get("sha256") != setup["target"]["sha256"]:
        log("the target's weights differ from the previous run's of this setup (another machine, torch or thread")
        log("  count): its entries are replaced, not merged")
        return
    rerun = {entry_key(e) for e in setup["entries"]}
    kept = [e for e in previous.get("entries", []) if entry_key(e) not in rerun]
    setup["entries"] = sort_entries(kept + setup["entries"])
    for mode, training in previous.get("reference_training", {}).items():
        if mode not in setup["reference_training"] and any(e["reference_mode"] == mode for e in kept):
            setup["reference_training"][mode] = training
    dates = {e.get("date") for e in kept}
    runs = {d: r for d, r in previous.get("runs", {}).items() if d in dates}
    setup["runs"] = {**runs, **setup["runs"]}


def sort_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mode = {"none": 0, "offline": 1, "online": 2}
    return sorted(
        entries,
        key=lambda e: (
            e["evaluated_on"] != ALL,
            e["library"] != "modelsec",
            e["reference_models"],
            mode.get(e["reference_mode"], 3),
            e["attack"],
        ),
    )


def find(entries: list[dict[str, Any]], attack: str, refs: int, mode: str) -> dict[str, Any] | None:
    for e in entries:
        if (e["attack"], e["reference_models"], e["reference_mode"], e["evaluated_on"]) == (attack, refs, mode, ALL):
            return e
    return None


def acceptance(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 4's criteria, on all candidates, with the largest online reference-model count measured."""
    online_counts = [e["reference_models"] for e in entries if e["reference_mode"] == "online"]
    base = find(entries, BASELINE, 0, "none")
    if not online_counts or base is None:
        return {"evaluable": False, "reason": "needs loss-threshold and at least 2 online reference models"}
    k = max(online_counts)
    out: dict[str, Any] = {"evaluable": True, "reference_models": k, "checks": {}}
    strongest = []
    for name in ("lira", "rmia"):
        e = find(entries, name, k, "online")
        if e is None:
            out["checks"][f"{name} ({k} refs) beats {BASELINE}"] = None
            continue
        strongest.append(e)
        out["checks"][f"{name} ({k} refs) beats {BASELINE} on AUC"] = e["auc"] > base["auc"]
        out["checks"][f"{name} ({k} refs) beats {BASELINE} on TPR@1%"] = (
            e["tpr_at_fpr"]["0.01"] > base["tpr_at_fpr"]["0.01"]
        )
    if strongest:
        best = max(strongest, key=lambda e: (e["tpr_at_fpr"]["0.001"], e["auc"]))
        low = best["tpr_ci"]["0.001"]["low"]
        out["checks"][f"best of lira/rmia ({best['attack']}) has TPR@0.1% lower bound {low:.4f} > 0.001"] = low > 0.001
    lira2, rmia2 = find(entries, "lira", 2, "online"), find(entries, "rmia", 2, "online")
    if lira2 is not None and rmia2 is not None:
        out["checks"]["rmia (2 refs) >= lira (2 refs) on AUC"] = rmia2["auc"] >= lira2["auc"]
        out["checks"]["rmia (2 refs) >= lira (2 refs) on TPR@1%"] = (
            rmia2["tpr_at_fpr"]["0.01"] >= lira2["tpr_at_fpr"]["0.01"]
        )
    out["met"] = all(v is True for v in out["checks"].values())
    return out


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def markdown_table(entries: list[dict[str, Any]], evaluated_on: str) -> str:
    lines = [
        "| attack | reference models | AUC [95% CI] | TPR@0.1% [CI] | TPR@1% [CI] | TPR@10% | eps lower bound "
        "| seconds | ref. training s | date |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for e in entries:
        if e["evaluated_on"] != evaluated_on:
            continue
        refs = "-" if e["reference_mode"] == "none" else f"{e['reference_models']} {e['reference_mode']}"
        tpr, ci = e["tpr_at_fpr"], e["tpr_ci"]
        lines.append(
            f"| {e['attack']} | {refs} | {e['auc']:.3f} [{e['auc_ci']['low']:.3f}, {e['auc_ci']['high']:.3f}] "
            f"| {pct(tpr['0.001'])} [{pct(ci['0.001']['low'])}, {pct(ci['0.001']['high'])}] "
            f"| {pct(tpr['0.01'])} [{pct(ci['0.01']['low'])}, {pct(ci['0.01']['high'])}] | {pct(tpr['0.1'])} "
            f"| {e['epsilon_lower_bound'] or 0.0:.2f} | {e['seconds']:.3f} | {e['reference_training_seconds']:.1f} "
            f"| {e.get('date', '?')[:10]} |"
        )
    return "\n".join(lines)


def report(name: str, setup: dict[str, Any]) -> str:
    t, p = setup["target"], setup.get("pool", {})
    parts = [
        f"### {name}: target train {pct(t['train_accuracy'])}, test {pct(t['test_accuracy'])}",
        "",
        f"All candidates ({p.get('candidate_members', '?')} members, {p.get('candidate_nonmembers', '?')} "
        "non-members):",
        "",
        markdown_table(setup["entries"], ALL),
        "",
        f"ART's held-out candidates ({p.get('held_out_members', '?')} members, {p.get('held_out_nonmembers', '?')} "
        "non-members; ART's attack model was fitted on the others):",
        "",
        markdown_table(setup["entries"], HELD_OUT),
    ]
    for mode, tr in setup.get("reference_training", {}).items():
        parts.append(
            f"\n{mode} reference models: {tr['reference_models']} trained in {tr['wall_seconds']:.1f} s wall "
            f"({tr['workers']} worker{'s' if tr['workers'] > 1 else ''}, {tr['training_seconds']:.1f} s summed)"
            + (" from the cache" if tr["from_cache"] else "")
        )
    acc = setup.get("acceptance", {})
    if not acc.get("evaluable"):
        parts.append(f"\nacceptance: not evaluable ({acc.get('reason', '?')})")
    else:
        parts.append(f"\nacceptance (issue 4): {'met' if acc['met'] else 'NOT met'}")
        for check, ok in acc["checks"].items():
            parts.append(f"- {check}: {'yes' if ok else ('not measured' if ok is None else 'NO')}")
    return "\n".join(parts)


def parse_counts(text: str) -> list[int]:
    counts = sorted({int(s) for s in text.split(",") if s.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"reference-model counts must be >= 1, got {text!r}")
    return counts


def art_split(
    pool: MembershipPool, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Seeded (fit, held-out) candidates for ART, each as (members, non-members) pool indices."""
    rng = np.random.default_rng(seed)
    perm_m, perm_n = rng.permutation(pool.members), rng.permutation(pool.nonmembers)
    fm, fn = round(fraction * perm_m.size), round(fraction * perm_n.size)
    return (np.sort(perm_m[:fm]), np.sort(perm_n[:fn])), (np.sort(perm_m[fm:]), np.sort(perm_n[fn:]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=2000, help="target training records (the first N members)")
    p.add_argument("--epochs", type=int, default=100, help="epochs of the target and of every reference model")
    p.add_argument(
        "--reference-models",
        type=parse_counts,
        default=parse_counts("1,2,4,8"),
        help="comma-separated counts; the largest is trained once online and the others are its first models "
        "(1: a separate offline model)",
    )
    p.add_argument("--candidates", type=int, default=None, help="members and as many non-members scored (all)")
    p.add_argument("--workers", type=int, default=2, help="processes training reference models")
    p.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    p.add_argument("--seed", type=int, default=0, help="target and reference training, candidate draw, ART split")
    p.add_argument("--art-fit-fraction", type=float, default=0.5, help="candidates ART's attack model is fitted on")
    p.add_argument("--art-models", default="nn,rf", help="ART attack_model_type values, comma-separated")
    p.add_argument("--skip-art", action="store_true", help="modelsec only (the held-out table keeps modelsec's rows)")
    p.add_argument("--cache", type=Path, default=None, help="cache reference models' logits in this folder")
    p.add_argument("--out", type=Path, default=HERE / "results" / "membership_vs_art.json")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="overwrite --out instead of merging into it (by default the setups and entries not run now are kept, "
        "each with the date it was measured)",
    )
    args = p.parse_args(argv)
    if args.train_size < 2 or args.epochs < 1 or args.workers < 1 or args.threads < 1:
        p.error("--train-size must be >= 2, --epochs, --workers and --threads >= 1")
    if not 0.0 < args.art_fit_fraction < 1.0:
        p.error("--art-fit-fraction must lie in (0, 1)")
    if args.candidates is None:
        args.candidates = args.train_size
    if args.candidates < 2:
        p.error("--candidates must be >= 2")
    counts: list[int] = args.reference_models
    if any(c > 2 and c % 2 for c in counts):
        log("note: an odd number of online reference models is not balanced (every record IN about half of them)")
    art_models = [] if args.skip_art else [s.strip() for s in args.art_models.split(",") if s.strip()]

    torch.set_num_threads(args.threads)
    art = import_art() if art_models else None
    splits = load_splits(DATA, seed=DATA_SPLIT_SEED)
    training = TrainingConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=args.seed)
    log(f"training the target ({ARCH}, {args.train_size} records, {args.epochs} epochs)")
    classifier, audit, target_info = train_target(splits, training, args.train_size)
    log(
        f"  train accuracy {pct(target_info['train_accuracy'])}, test accuracy {pct(target_info['test_accuracy'])}, "
        f"{target_info['training_seconds']:.1f} s"
    )

    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = {
        "data": f"{DATA}, load_splits seed {DATA_SPLIT_SEED}: members = the first train_size records of the members "
        "split, non-members = the test split, population = the population split",
        "train_size": args.train_size,
        "epochs": args.epochs,
        "candidates": args.candidates,
        "reference_models": counts,
        "workers": args.workers,
        "seed": args.seed,
        "art_fit_fraction": args.art_fit_fraction,
        "art_models": art_models,
        "torch_threads": torch.get_num_threads(),
    }
    import sklearn

    versions = {
        "modelsec": modelsec.__version__,
        "adversarial-robustness-toolbox": art.__version__ if art is not None else None,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }
    setup: dict[str, Any] = {
        "date": date,
        "target": target_info,
        "runs": {date: {"config": config, "versions": versions}},
    }
    cache = SignalCache(args.cache) if args.cache is not None else None

    entries, pool, fit, held_out = run_modelsec(args, classifier, audit, training, counts, cache, setup)
    if art is not None:
        log(f"ART MembershipInferenceBlackBox, fitted on {fit[0].size} + {fit[1].size} candidates")
        for model_type in art_models:
            entries.append(run_art(art, classifier.module, pool, fit, held_out, model_type, args.seed))
    for e in entries:
        e["date"] = date
    setup["entries"] = sort_entries(entries)

    name = f"train{args.train_size}-epochs{args.epochs}-seed{args.seed}-candidates{args.candidates}"
    results: dict[str, Any] = {
        "benchmark": "membership_vs_art",
        "date": date,
        "config": config,
        "versions": versions,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
        "setups": {},
    }
    previous: dict[str, Any] = {}
    if args.out.exists() and not args.fresh:
        previous = json.loads(args.out.read_text(encoding="utf-8")).get("setups", {})
        results["setups"] = {n: s for n, s in previous.items() if n != name}
    merge_setup(previous.get(name, {}), setup)
    setup["acceptance"] = acceptance(setup["entries"])
    results["setups"][name] = setup
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n" + report(name, setup))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
