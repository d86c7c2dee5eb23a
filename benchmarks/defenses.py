"""Issue 5's acceptance numbers: modelsec's defenses, hardened with ``modelsec.harden`` and audited with modelsec's
own audit, on Fashion-MNIST with the built-in ``small-cnn`` on a 2-core CPU.

Data: ``load_splits("fashion-mnist", seed=0)``: 50,000 members (the training records; the first ``--members`` of
them), 10,000 test records (non-members: test accuracy and the attacked images) and 10,000 population records.
Robustness is audited with ``AuditConfig(samples=--samples, eps=(--eps,), preset=--preset, seed=0)``; with seed 0
the audit attacks the first N of ``np.random.default_rng(0).permutation`` of the 10,000 test images (sorted), the
same images as ``robustness_vs_art.py``. Clean accuracy in the targets is on all 10,000 test images; the audit's
own clean accuracy on its N images is reported beside it. Four parts, each selectable with ``--parts``:

- ``adversarial``: ``pgd-at`` (PGD-7, Madry et al. 2018), ``trades`` (beta ``--trades-beta``, Zhang et al. 2019)
  and ``fgsm-rs`` (Wong et al. 2020, with modelsec's catastrophic-overfitting check) at eps ``--eps``, ``--epochs``
  epochs each (Adam, lr 1e-3, batch 128, cosine: harden's defaults), then the ``standard`` audit of each. Targets:
  PGD-AT or TRADES with clean accuracy >= 82% and robust accuracy >= 65%; FGSM-RS within 5 points of PGD-AT's
  robust accuracy in at most a third of its training time (training seconds from each provenance; compare them
  only when both were trained under similar machine load).
- ``dp``: ``dp-sgd`` calibrated to ``--dp-target-epsilon`` 3 at delta 1e-5 (PRV accountant), in the spirit of
  Tramer & Boneh 2021's Fashion-MNIST CNN recipe (SGD momentum 0.9, clip 0.1, batch 2048, lr 4, 40 epochs; they
  report 86.0%), on their tanh CNN (``--dp-arch dp-cnn``, modelsec's built-in copy of it; ``small-cnn``'s ReLU
  layers do worse under DP-SGD, as Papernot et al. 2021 found). Target: test
  accuracy >= 84% at epsilon <= 3. The PRV, RDP and PLD epsilons are reported. (The cost of a DP epoch against a
  non-private one, the other DP target, is measured by ``dp_epoch_cost.py``.)
- ``distillation``: defensive distillation at T = ``--temperature`` 100 (Papernot et al. 2016), ``--distillation-
  epochs`` for the teacher and the student, audited with ``standard`` beside the undefended bundled model (the
  same small-cnn, 10 epochs on all members). Targets (Carlini & Wagner 2017): the audit flags the distilled model
  (a sanity check fires: zero gradients from its saturated softmax) and its robust accuracy is at most 10%.
- ``membership``: an overfit ``standard`` small-cnn on the first ``--mia-members`` 2000 members for
  ``--mia-epochs`` 100 epochs, against ``dmp`` (teacher: the same recipe; student: ``--dmp-epochs`` on the
  population records' soft labels) and ``regularised`` (label smoothing, weight decay, early stopping on the
  generalisation gap, ``--max-gap``) on the same members, compared with ``modelsec.audits.compare.run_compare``
  under one membership audit: ``--reference-models`` 4 online reference models (trained once per recipe and shared
  through the signal cache in ``--cache``; their epochs fixed to ``--mia-epochs`` for every model, so the baseline
  and DMP share them), ``--mia-samples`` members and as many non-members, every membership attack the models
  allow. Per model: the strongest attack by TPR at 1% FPR (then AUC) and the largest AUC of any attack. Targets,
  for DMP or regularisation: the largest TPR at 1% FPR at most half the undefended model's, the largest
  ``AUC - 0.5`` at most half the undefended model's, test accuracy at most 5 points below it.

Models go to ``--models-dir`` (``benchmarks/models/``, not committed) as ``defenses-<name>.safetensors`` with their
provenance; a model whose file exists is reused (its recorded configuration must match the options; ``--retrain``
trains it again), and an interrupted training resumes from harden's per-epoch checkpoint (``OUT.ckpt``). Audits go
to ``--audit-dir``. Results merge into ``--out`` per part (the parts not run now are kept with their date;
``--fresh`` overwrites the file), and a markdown table per part with each target met or missed is printed.

    .venv/bin/python benchmarks/defenses.py --parts adversarial
    .venv/bin/python benchmarks/defenses.py --parts dp
    .venv/bin/python benchmarks/defenses.py --parts distillation
    .venv/bin/python benchmarks/defenses.py --parts membership
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import modelsec
from modelsec.audits.compare import run_compare
from modelsec.audits.runner import AuditConfig, AuditOutcome, run_audit
from modelsec.core.errors import ModelsecError
from modelsec.core.progress import RichProgress
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses import harden, make_defense
from modelsec.defenses.training import accuracy
from modelsec.models.loading import bundled_model_path, load_model
from modelsec.results.audit import AuditResult, MembershipAttackResult, eps_key
from modelsec.store.cache import SignalCache

HERE = Path(__file__).resolve().parent
DATA = "fashion-mnist"
ARCH = "small-cnn"
SPLIT_SEED = 0
AUDIT_SEED = 0  # seed 0: the audit attacks the same test images as robustness_vs_art.py
PARTS = ("adversarial", "dp", "distillation", "membership")
PREFIX = "defenses-"

ADV_CLEAN, ADV_ROBUST = 0.82, 0.65
FGSM_ROBUST_GAP, FGSM_TIME_FRACTION = 0.05, 1 / 3
DP_ACCURACY, DP_EPSILON = 0.84, 3.0
DISTILLATION_ROBUST = 0.10
MIA_FACTOR, MIA_ACCURACY_DROP = 0.5, 0.05
FPR_KEYS = ("0.001", "0.01", "0.1")


def log(message: str) -> None:
    print(message, flush=True)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@dataclass
class Bench:
    """What every part needs: the options, the data, where files go."""

    args: argparse.Namespace
    splits: Splits
    progress: RichProgress

    @property
    def models_dir(self) -> Path:
        return Path(self.args.models_dir)

    @property
    def audit_dir(self) -> Path:
        return Path(self.args.audit_dir) if self.args.audit_dir else self.models_dir / "audits"


# -- training -----------------------------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    return json.loads(json.dumps(value))


def train_model(
    bench: Bench, name: str, defense: str, options: dict[str, Any], members: int | None, arch: str = ARCH
) -> dict[str, Any]:
    """``harden`` architecture ``arch`` with ``defense`` into ``<models-dir>/defenses-<name>.safetensors``, or reuse
    that file when it exists (unless ``--retrain``) and records the same architecture, configuration and
    training-set size."""
    args = bench.args
    path = bench.models_dir / f"{PREFIX}{name}.safetensors"
    sidecar = path.with_name(path.name + ".json")
    config = canonical(make_defense(defense, options).config.to_dict())  # validated before anything runs
    used = min(members or len(bench.splits.members), len(bench.splits.members))
    if path.exists() and sidecar.exists() and not args.retrain:
        provenance = json.loads(sidecar.read_text(encoding="utf-8"))
        recorded = (provenance.get("defense") or {}).get("config")
        recorded_used = (provenance.get("data") or {}).get("members_used")
        recorded_arch = provenance.get("arch", ARCH)
        if recorded != config or recorded_used != used or recorded_arch != arch:
            differ = sorted(k for k in set(config) | set(recorded or {}) if config.get(k) != (recorded or {}).get(k))
            if recorded_arch != arch:
                differ.append(f"arch ({recorded_arch} recorded, {arch} asked for)")
            if recorded_used != used:
                differ.append(f"members ({recorded_used} recorded, {used} asked for)")
            raise SystemExit(
                f"{path} was trained with other settings ({', '.join(differ)}); pass --retrain to train it again "
                "or --models-dir to keep both"
            )
        log(f"{name}: reusing {path} (trained {provenance.get('created', '?')}; --retrain trains it again)")
        return {"path": path, "provenance": provenance, "trained_now": False}
    log(f"{name}: training ({defense}, {used} members) -> {path}")
    provenance = harden(
        defense,
        data=bench.splits,
        arch=arch,
        out=path,
        config=options,
        members=members,
        overwrite=True,  # an existing file is replaced only with --retrain or when its provenance is missing
        resume=not args.retrain,
        progress=bench.progress,
    )
    log(f"{name}: trained in {provenance['training_seconds']:.1f} s")
    return {"path": path, "provenance": provenance, "trained_now": True}


def test_accuracy(bench: Bench, path: Path | None) -> float:
    """Accuracy on all 10,000 test records (``path`` None: the bundled model)."""
    module = load_model(path).classifier.module
    return accuracy(module, bench.splits.nonmembers, torch.device("cpu"))


def model_entry(bench: Bench, trained: dict[str, Any]) -> dict[str, Any]:
    """A trained model's record: its file, configuration, training time and events, and its test accuracy."""
    prov = trained["provenance"]
    history = prov.get("training") or {}
    return {
        "path": str(trained["path"]),
        "defense": (prov.get("defense") or {}).get("name"),
        "config": (prov.get("defense") or {}).get("config"),
        "members": (prov.get("data") or {}).get("members_used"),
        "trained_now": trained["trained_now"],
        "trained_at": prov.get("created"),
        "training_seconds": prov.get("training_seconds"),
        "epochs_completed": prov.get("epochs_completed"),
        "resumed_from_epoch": prov.get("resumed_from_epoch"),
        "stop_reason": prov.get("stop_reason"),
        "events": history.get("events", []),
        "test_accuracy": test_accuracy(bench, trained["path"]),
    }


# -- audits -------------------------------------------------------------------------------------------------------


def robustness_audit(bench: Bench, path: Path | None, name: str) -> dict[str, Any]:
    """The robustness audit of one model file (``path`` None: the bundled model), as the CLI would run it."""
    args = bench.args
    config = AuditConfig(
        eps=(args.eps,),
        samples=args.samples,
        preset=args.preset,
        seed=AUDIT_SEED,
        mia_samples=args.samples,  # the audit always scores membership too; kept small here
    )
    log(f"{name}: auditing ({args.preset} preset, {args.samples} test images, eps {args.eps:g})")
    outcome: AuditOutcome = run_audit(
        path if path is not None else bundled_model_path(),
        DATA,
        config=config,
        out_dir=bench.audit_dir / name,
        progress=bench.progress,
    )
    result = outcome.result
    rob = result.robustness
    if rob is None:
        raise RuntimeError(f"the audit of {name} has no robustness result")
    key = eps_key(args.eps)
    ci = rob.robust_ci[key]
    entry = {
        "preset": args.preset,
        "samples": rob.n,
        "samples_sha256": result.settings.get("samples_sha256"),
        "clean_accuracy": rob.clean_accuracy,
        "robust_accuracy": rob.robust_accuracy[key],
        "robust_ci": [ci.low, ci.high],
        "attacks": [
            {"attack": r.attack, "params": r.params, "robust_accuracy": r.robust_accuracy, "seconds": r.seconds}
            for r in rob.results
            if eps_key(r.eps) == key
        ],
        "cumulative": rob.chain,
        "flags": [{"check": f.check, "resolved": f.resolved, "message": f.message} for f in rob.flags],
        "skipped": [{"attack": s.attack, "reason": s.reason} for s in rob.skipped],
        "verdict": result.verdict.headline,
        "seconds": result.timings.get("robustness", 0.0) + result.timings.get("sanity_checks", 0.0),
        "report": str(outcome.files.get("report", "")),
    }
    log(
        f"{name}: clean {pct(entry['clean_accuracy'])}, robust {pct(entry['robust_accuracy'])} "
        f"({entry['seconds']:.1f} s){' flags: ' + ', '.join(f['check'] for f in entry['flags']) if rob.flags else ''}"
    )
    return entry


# -- parts --------------------------------------------------------------------------------------------------------


def check(met: bool, detail: str) -> dict[str, Any]:
    return {"met": bool(met), "detail": detail}


ADVERSARIAL = ("pgd-at", "trades", "fgsm-rs")


def part_adversarial(bench: Bench) -> dict[str, Any]:
    """Train and audit the ``--adversarial-defenses`` asked for; the others keep their entries from an earlier run
    of this part in ``--out`` (each entry carries the date it was measured)."""
    a = bench.args
    specs = {
        "pgd-at": {"eps": a.eps, "epochs": a.epochs, "seed": a.seed},
        "trades": {"eps": a.eps, "epochs": a.epochs, "beta": a.trades_beta, "seed": a.seed},
        "fgsm-rs": {"eps": a.eps, "epochs": a.fgsm_epochs or a.epochs, "seed": a.seed},
    }
    measured: dict[str, Any] = {}
    for name in a.adversarial_defenses:
        entry = model_entry(bench, train_model(bench, name, name, specs[name], a.members))
        entry["audit"] = robustness_audit(bench, Path(entry["path"]), name)
        entry["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        measured[name] = entry
    # read only now: a concurrent run of this part (other defenses) may have finished meanwhile
    earlier = previous_parts(a.out).get("adversarial", {}).get("models", {})
    models = {n: measured[n] if n in measured else earlier[n] for n in ADVERSARIAL if n in measured or n in earlier}

    def clean_robust(n: str) -> str:
        if n not in models:
            return f"{n} not run"
        return f"{n} clean {pct(models[n]['test_accuracy'])}, robust {pct(models[n]['audit']['robust_accuracy'])}"

    good = [
        n
        for n in ("pgd-at", "trades")
        if n in models
        and models[n]["test_accuracy"] >= ADV_CLEAN
        and models[n]["audit"]["robust_accuracy"] >= ADV_ROBUST
    ]
    checks = {
        f"PGD-AT or TRADES: clean >= {pct(ADV_CLEAN)} and robust >= {pct(ADV_ROBUST)}": check(
            bool(good), "; ".join(clean_robust(n) for n in ("pgd-at", "trades"))
        ),
    }
    if "pgd-at" not in models or "fgsm-rs" not in models:
        return {"models": models, "acceptance": checks}
    pgd, fgsm = models["pgd-at"], models["fgsm-rs"]
    gap = pgd["audit"]["robust_accuracy"] - fgsm["audit"]["robust_accuracy"]
    ratio = fgsm["training_seconds"] / pgd["training_seconds"] if pgd["training_seconds"] else float("inf")
    checks |= {
        f"FGSM-RS robust accuracy within {100 * FGSM_ROBUST_GAP:g} points of PGD-AT's": check(
            gap <= FGSM_ROBUST_GAP + 1e-12,
            f"FGSM-RS {pct(fgsm['audit']['robust_accuracy'])}, PGD-AT {pct(pgd['audit']['robust_accuracy'])}",
        ),
        "FGSM-RS training time <= 1/3 of PGD-AT's": check(
            ratio <= FGSM_TIME_FRACTION,
            f"{fgsm['training_seconds']:.0f} s vs {pgd['training_seconds']:.0f} s ({ratio:.2f}x)",
        ),
    }
    return {"models": models, "acceptance": checks}


def part_dp(bench: Bench) -> dict[str, Any]:
    a = bench.args
    options = {
        "target_epsilon": a.dp_target_epsilon,
        "delta": a.dp_delta,
        "l2_norm_clip": a.dp_clip,
        "batch_size": a.dp_batch_size,
        "lr": a.dp_lr,
        "momentum": a.dp_momentum,
        "optimizer": a.dp_optimizer,
        "epochs": a.dp_epochs,
        "seed": a.seed,
    }
    trained = train_model(bench, "dp-sgd", "dp-sgd", options, a.members, arch=a.dp_arch)
    entry = model_entry(bench, trained)
    report = trained["provenance"].get("dp_sgd") or {}
    entry["dp"] = {
        k: report.get(k)
        for k in (
            "epsilon",
            "epsilons",
            "delta",
            "accountant",
            "noise_multiplier",
            "noise_multiplier_source",
            "sample_rate",
            "expected_batch_size",
            "dataset_size",
            "steps",
            "grad_sample_mode",
            "grad_sample_fallback",
            "warnings",
        )
    }
    entry["dp"]["test_accuracy_per_epoch"] = [e.get("test_accuracy") for e in report.get("history", [])]
    entry["arch"] = a.dp_arch
    eps = report.get("epsilon")
    eps_text = "none" if eps is None else f"{eps:.3f}"
    log(f"dp-sgd: test accuracy {pct(entry['test_accuracy'])}, epsilon {eps_text} (PRV) at delta {a.dp_delta:g}")
    checks = {
        f"DP-SGD test accuracy >= {pct(DP_ACCURACY)} at epsilon <= {DP_EPSILON:g} (delta {a.dp_delta:g})": check(
            eps is not None and eps <= DP_EPSILON and entry["test_accuracy"] >= DP_ACCURACY,
            f"{pct(entry['test_accuracy'])} at PRV epsilon {eps_text}",
        )
    }
    return {"models": {"dp-sgd": entry}, "acceptance": checks}


def part_distillation(bench: Bench) -> dict[str, Any]:
    a = bench.args
    options = {"temperature": a.temperature, "epochs": a.distillation_epochs, "seed": a.seed}
    trained = train_model(bench, "distillation", "distillation", options, a.members)
    distilled = model_entry(bench, trained)
    distilled["deployed"] = (trained["provenance"].get("distillation") or {}).get("deployed")
    distilled["audit"] = robustness_audit(bench, trained["path"], "distillation")
    bundled = json.loads(bundled_model_path().with_name(bundled_model_path().name + ".json").read_text("utf-8"))
    undefended = {
        "path": "bundled (modelsec.models.loading.bundled_model_path())",
        "defense": None,
        "config": (bundled.get("training") or {}).get("config"),
        "members": (bundled.get("data") or {}).get("members_used"),
        "training_seconds": (bundled.get("training") or {}).get("seconds"),
        "test_accuracy": test_accuracy(bench, None),
        "audit": robustness_audit(bench, None, "undefended"),
    }
    flags = distilled["audit"]["flags"]
    robust = distilled["audit"]["robust_accuracy"]
    checks = {
        "the audit flags the distilled model": check(
            bool(flags), ", ".join(f"{f['check']} ({'resolved' if f['resolved'] else 'unresolved'})" for f in flags)
        ),
        f"distilled model's robust accuracy <= {pct(DISTILLATION_ROBUST)}": check(
            robust <= DISTILLATION_ROBUST,
            f"{pct(robust)} (undefended: {pct(undefended['audit']['robust_accuracy'])})",
        ),
    }
    return {"models": {"undefended": undefended, "distillation": distilled}, "acceptance": checks}


class CacheStore:
    """What ``run_compare`` needs of a run store: a signal cache (in ``--cache``, so a rerun trains no reference
    model again) and an audit recorder that records nothing."""

    def __init__(self, directory: Path) -> None:
        self.signal_cache = SignalCache(directory)

    def record_audit(self, result: AuditResult, *, out_dir: str | None, artifacts: dict[str, Path]) -> str:
        return result.run_id


def attack_row(a: MembershipAttackResult) -> dict[str, Any]:
    return {
        "attack": a.attack,
        "auc": a.auc,
        "tpr_at_fpr": {k: a.tpr_at_fpr.get(k) for k in FPR_KEYS},
        "epsilon_lower_bound": a.epsilon_lower_bound,
        "n_members": a.n_members,
        "n_nonmembers": a.n_nonmembers,
    }


def leakage(result: AuditResult) -> dict[str, Any]:
    """The membership numbers of one audit: every attack, the strongest by TPR at 1% FPR (then AUC), and the
    largest AUC of any attack."""
    attacks = [] if result.privacy is None else result.privacy.attacks

    def finite(x: float | None) -> float:
        return x if x is not None and np.isfinite(x) else -1.0

    strongest = max(attacks, key=lambda a: (finite(a.tpr_at_fpr.get("0.01")), finite(a.auc)))
    top_auc = max(attacks, key=lambda a: finite(a.auc))
    return {
        "strongest": strongest.attack,
        "tpr_at_1pct": strongest.tpr_at_fpr.get("0.01"),
        "tpr_at_0.1pct": strongest.tpr_at_fpr.get("0.001"),
        "strongest_auc": strongest.auc,
        "max_auc": top_auc.auc,
        "max_auc_attack": top_auc.attack,
        "attacks": [attack_row(a) for a in attacks],
        "compute": None if result.privacy is None else result.privacy.compute,
    }


def part_membership(bench: Bench) -> dict[str, Any]:
    a = bench.args
    m = a.mia_members
    specs = {
        "mia-standard": ("standard", {"epochs": a.mia_epochs, "seed": a.seed}),
        "mia-dmp": ("dmp", {"epochs": a.dmp_epochs, "teacher_epochs": a.mia_epochs, "seed": a.seed}),
        "mia-regularised": ("regularised", {"epochs": a.mia_epochs, "max_gap": a.max_gap, "seed": a.seed}),
    }
    trained = {name: train_model(bench, name, defense, options, m) for name, (defense, options) in specs.items()}
    models = {name: model_entry(bench, t) for name, t in trained.items()}
    train = bench.splits.members.subset(np.arange(min(m, len(bench.splits.members))))
    for name, t in trained.items():
        models[name]["train_accuracy"] = accuracy(load_model(t["path"]).classifier.module, train, torch.device("cpu"))
    config = AuditConfig(
        eps=(a.eps,),
        samples=a.mia_audit_samples,
        preset="quick",
        mia_samples=a.mia_samples or m,
        reference_models=a.reference_models,
        reference_mode="online",
        reference_epochs=a.mia_epochs,
        workers=a.workers,
        seed=AUDIT_SEED,
    )
    cache = Path(a.cache) if a.cache else bench.models_dir / "signal-cache"
    log(
        f"membership: comparing {', '.join(models)} ({config.reference_models} online reference models, "
        f"{config.mia_samples} members and as many non-members; signal cache {cache})"
    )
    start = time.perf_counter()
    outcome = run_compare(
        trained["mia-standard"]["path"],
        [trained["mia-dmp"]["path"], trained["mia-regularised"]["path"]],
        data=bench.splits.with_members_used(m),  # run_compare does not apply the recorded members_used itself
        config=config,
        out_dir=bench.audit_dir / "membership",
        store=CacheStore(cache),
        progress=bench.progress,
    )
    compare_seconds = time.perf_counter() - start
    for name, result in outcome.results.items():
        key = name.removeprefix(PREFIX)
        models[key]["leakage"] = leakage(result)
        lk = models[key]["leakage"]
        log(
            f"{key}: test {pct(models[key]['test_accuracy'])}, strongest {lk['strongest']} TPR@1% "
            f"{pct(lk['tpr_at_1pct'])}, max AUC {lk['max_auc']:.3f} ({lk['max_auc_attack']})"
        )
    base = models["mia-standard"]
    checks = {}
    per_defense = {}
    for name in ("mia-dmp", "mia-regularised"):
        d = models[name]
        tpr_ok = d["leakage"]["tpr_at_1pct"] <= MIA_FACTOR * base["leakage"]["tpr_at_1pct"]
        auc_ok = d["leakage"]["max_auc"] - 0.5 <= MIA_FACTOR * (base["leakage"]["max_auc"] - 0.5)
        drop = base["test_accuracy"] - d["test_accuracy"]
        acc_ok = drop <= MIA_ACCURACY_DROP + 1e-12
        per_defense[name] = {"tpr_halved": tpr_ok, "auc_halfway": auc_ok, "accuracy_within": acc_ok}
        label = f"{name.removeprefix('mia-')}: TPR@1% halved, AUC halfway to 0.5, <= 5 points of accuracy lost"
        checks[label] = check(
            tpr_ok and auc_ok and acc_ok,
            f"TPR@1% {pct(d['leakage']['tpr_at_1pct'])} vs {pct(base['leakage']['tpr_at_1pct'])} "
            f"({'ok' if tpr_ok else 'no'}); max AUC {d['leakage']['max_auc']:.3f} vs "
            f"{base['leakage']['max_auc']:.3f} ({'ok' if auc_ok else 'no'}); accuracy {100 * -drop:+.1f} points "
            f"({'ok' if acc_ok else 'no'})",
        )
    either = [n for n, c in per_defense.items() if all(c.values())]
    checks["DMP or regularisation meets all three"] = check(bool(either), ", ".join(either) or "neither")
    return {
        "models": models,
        "comparison": {
            "files": {k: str(v) for k, v in outcome.files.items()},
            "recommendation": outcome.comparison.recommendation.outcome(),
            "notes": outcome.comparison.notes,
            "seconds": compare_seconds,
        },
        "acceptance": checks,
    }


RUNNERS = {
    "adversarial": part_adversarial,
    "dp": part_dp,
    "distillation": part_distillation,
    "membership": part_membership,
}


# -- tables -------------------------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def flags_text(audit: dict[str, Any]) -> str:
    return ", ".join(f["check"] + ("" if f["resolved"] else " (unresolved)") for f in audit["flags"]) or "-"


def table(part: str, entry: dict[str, Any]) -> str:
    models = entry["models"]
    date = entry.get("date", "?")[:10]
    if part in ("adversarial", "distillation"):
        lines = [
            "| model | epochs | training s | clean (10k test) | clean (audit) | robust [95% CI] | audit s | flags "
            "| date |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for name, m in models.items():
            au = m["audit"]
            epochs = m.get("epochs_completed") or (m.get("config") or {}).get("epochs", "-")
            lines.append(
                f"| {name} | {epochs} | {seconds(m.get('training_seconds'))} | {pct(m['test_accuracy'])} "
                f"| {pct(au['clean_accuracy'])} | {pct(au['robust_accuracy'])} [{pct(au['robust_ci'][0])}, "
                f"{pct(au['robust_ci'][1])}] | {au['seconds']:.0f} | {flags_text(au)} "
                f"| {m.get('measured', date)[:10]} |"
            )
        return "\n".join(lines)
    if part == "dp":
        lines = [
            "| model | epochs | batch | noise multiplier | steps | eps PRV | eps RDP | eps PLD | test acc | training s "
            "| date |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, m in models.items():
            dp, eps = m["dp"], m["dp"].get("epsilons") or {}

            def e(k: str, eps: dict[str, Any] = eps) -> str:
                return "-" if eps.get(k) is None else f"{eps[k]:.2f}"

            lines.append(
                f"| {name} ({m.get('arch', ARCH)}) | {m['config']['epochs']} | {dp['expected_batch_size']} "
                f"| {dp['noise_multiplier']:.3f} "
                f"| {dp['steps']} | {e('prv')} | {e('rdp')} | {e('pld')} | {pct(m['test_accuracy'])} "
                f"| {seconds(m.get('training_seconds'))} | {date} |"
            )
        return "\n".join(lines)
    lines = [
        "| model | epochs | training s | train acc | test acc | strongest attack | TPR@1% | TPR@0.1% | its AUC "
        "| max AUC (attack) | date |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, m in models.items():
        lk = m["leakage"]
        lines.append(
            f"| {name} | {m.get('epochs_completed', '-')} | {seconds(m.get('training_seconds'))} "
            f"| {pct(m.get('train_accuracy'))} | {pct(m['test_accuracy'])} | {lk['strongest']} "
            f"| {pct(lk['tpr_at_1pct'])} | {pct(lk['tpr_at_0.1pct'])} | {lk['strongest_auc']:.3f} "
            f"| {lk['max_auc']:.3f} ({lk['max_auc_attack']}) | {date} |"
        )
    return "\n".join(lines)


def acceptance_text(entry: dict[str, Any]) -> str:
    return "\n".join(
        f"- {name}: {'met' if c['met'] else '**missed**'} ({c['detail']})" for name, c in entry["acceptance"].items()
    )


# -- main ---------------------------------------------------------------------------------------------------------


def previous_parts(path: Path) -> dict[str, Any]:
    """The parts already in ``path`` (empty when it does not exist)."""
    if not path.exists():
        return {}
    parts: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")).get("parts", {})
    return parts


def part_config(part: str, args: argparse.Namespace) -> dict[str, Any]:
    """The options that shaped a part's numbers, recorded with it."""
    common = {"seed": args.seed, "torch_threads": torch.get_num_threads()}
    audit = {"eps": args.eps, "samples": args.samples, "preset": args.preset, "audit_seed": AUDIT_SEED}
    return {
        "adversarial": {
            **common,
            **audit,
            "members": args.members,
            "epochs": args.epochs,
            "fgsm_epochs": args.fgsm_epochs or args.epochs,
            "trades_beta": args.trades_beta,
        },
        "dp": {
            **common,
            "members": args.members,
            "target_epsilon": args.dp_target_epsilon,
            "delta": args.dp_delta,
            "l2_norm_clip": args.dp_clip,
            "batch_size": args.dp_batch_size,
            "lr": args.dp_lr,
            "momentum": args.dp_momentum,
            "optimizer": args.dp_optimizer,
            "epochs": args.dp_epochs,
        },
        "distillation": {
            **common,
            **audit,
            "members": args.members,
            "temperature": args.temperature,
            "epochs": args.distillation_epochs,
        },
        "membership": {
            **common,
            "members": args.mia_members,
            "epochs": args.mia_epochs,
            "dmp_student_epochs": args.dmp_epochs,
            "max_gap": args.max_gap,
            "reference_models": args.reference_models,
            "reference_epochs": args.mia_epochs,
            "mia_samples": args.mia_samples or args.mia_members,
            "audit": {"preset": "quick", "samples": args.mia_audit_samples, "eps": args.eps},
            "workers": args.workers,
        },
    }[part]


def versions() -> dict[str, Any]:
    out = {"modelsec": modelsec.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import opacus

        out["opacus"] = opacus.__version__
    except ImportError:
        out["opacus"] = None
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    p.add_argument("--members", type=int, default=None, help="training records of adversarial/dp/distillation (all)")
    p.add_argument("--samples", type=int, default=1000, help="test images the robustness audits attack")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf budget of training and audits")
    p.add_argument("--preset", default="standard", help="robustness audit preset (the targets use standard)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every model")
    g = p.add_argument_group("adversarial")
    g.add_argument("--epochs", type=int, default=5, help="epochs of pgd-at and trades (5: the measured run)")
    g.add_argument("--fgsm-epochs", type=int, default=None, help="epochs of fgsm-rs (default: --epochs)")
    g.add_argument("--trades-beta", type=float, default=6.0)
    g.add_argument(
        "--adversarial-defenses",
        default=",".join(ADVERSARIAL),
        help="comma-separated subset to train and audit now; the others keep their entries in --out",
    )
    g = p.add_argument_group("dp")
    g.add_argument("--dp-target-epsilon", type=float, default=3.0)
    g.add_argument("--dp-delta", type=float, default=1e-5)
    g.add_argument("--dp-clip", type=float, default=0.1, help="l2_norm_clip")
    g.add_argument("--dp-batch-size", type=int, default=2048, help="expected (Poisson) batch size")
    g.add_argument("--dp-lr", type=float, default=4.0)
    g.add_argument("--dp-momentum", type=float, default=0.9)
    g.add_argument("--dp-optimizer", default="sgd", choices=("sgd", "adam"))
    g.add_argument("--dp-epochs", type=int, default=40)
    g.add_argument("--dp-arch", default="dp-cnn", help="architecture (dp-cnn: Tramer & Boneh's tanh CNN)")
    g = p.add_argument_group("distillation")
    g.add_argument("--temperature", type=float, default=100.0)
    g.add_argument("--distillation-epochs", type=int, default=10, help="teacher and student (the bundled model: 10)")
    g = p.add_argument_group("membership")
    g.add_argument("--mia-members", type=int, default=2000, help="the overfit models' training records")
    g.add_argument("--mia-epochs", type=int, default=100, help="baseline, DMP teacher, regularised (max) epochs")
    g.add_argument("--dmp-epochs", type=int, default=20, help="DMP student epochs on the population records")
    g.add_argument("--max-gap", type=float, default=0.05, help="regularised: generalisation gap budget")
    g.add_argument("--reference-models", type=int, default=4, help="online reference models (>= 2)")
    g.add_argument("--mia-samples", type=int, default=None, help="members scored (default: --mia-members)")
    g.add_argument("--mia-audit-samples", type=int, default=200, help="test images of the compare's quick audit")
    g.add_argument("--workers", type=int, default=2, help="processes training reference models")
    g.add_argument("--cache", default=None, help="reference-model signal cache (default: MODELS_DIR/signal-cache)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    p.add_argument("--models-dir", default=str(HERE / "models"))
    p.add_argument("--audit-dir", default=None, help="audit reports (default: MODELS_DIR/audits)")
    p.add_argument("--retrain", action="store_true", help="train every model of the parts run, even if its file exists")
    p.add_argument("--out", type=Path, default=HERE / "results" / "defenses.json")
    p.add_argument("--fresh", action="store_true", help="overwrite --out instead of merging the parts run into it")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = [s for s in parts if s not in PARTS]
    if unknown or not parts:
        p.error(f"unknown part {', '.join(unknown)}; known: {', '.join(PARTS)}")
    args.adversarial_defenses = [s.strip() for s in args.adversarial_defenses.split(",") if s.strip()]
    if set(args.adversarial_defenses) - set(ADVERSARIAL) or not args.adversarial_defenses:
        p.error(f"--adversarial-defenses: choose from {', '.join(ADVERSARIAL)}")
    if args.members is not None and args.members < 1:
        p.error("--members must be >= 1")
    if "dp" in parts and args.members is not None and args.dp_batch_size > args.members:
        p.error(f"--dp-batch-size {args.dp_batch_size} exceeds --members {args.members} (Poisson sampling)")
    if "membership" in parts and args.reference_models < 2:
        p.error("--reference-models must be >= 2 (online reference models)")

    torch.set_num_threads(args.threads)
    splits = load_splits(DATA, seed=SPLIT_SEED)
    bench = Bench(args, splits, RichProgress(quiet=args.quiet))
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results: dict[str, Any] = {
        "benchmark": "defenses",
        "date": date,
        "data": f"{DATA}, load_splits seed {SPLIT_SEED}; test accuracy on all {len(splits.nonmembers)} test records",
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
        "parts": {},
    }
    if args.fresh:
        args.out.unlink(missing_ok=True)
    try:
        for part in parts:
            log(f"\n== {part}")
            start = time.perf_counter()
            entry = RUNNERS[part](bench)
            entry = {
                "date": date,
                "seconds": time.perf_counter() - start,
                "config": part_config(part, args),
                "versions": versions(),
                **entry,
            }
            # re-read before each write: another process may have finished another part meanwhile
            results["parts"] = {**previous_parts(args.out), part: entry}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # partial results survive
            log(f"{part}: {entry['seconds']:.0f} s")
    except ModelsecError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    results["parts"] = previous_parts(args.out) or results["parts"]
    order = [p for p in PARTS if p in results["parts"]]
    for part in order:
        entry = results["parts"][part]
        print(f"\n### {part} ({entry['date'][:10]}, {entry['seconds']:.0f} s)\n")
        print(table(part, entry))
        print("\nacceptance (issue 5):")
        print(acceptance_text(entry))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
