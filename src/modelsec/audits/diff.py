"""``modelsec runs diff A B``: two audits side by side, and what changed significantly.

:func:`load_run` finds a run as ``--baseline`` does (a run id or unique prefix in the run store, a ``result.json``
or the folder holding one) but, unlike :func:`modelsec.audits.gate.load_baseline`, accepts a run without
per-record flags: the diff then shows the numbers without a test. :func:`diff_runs` is a pure function of the two
loaded runs:

- robustness, per eps: both worst-case robust accuracies with their intervals and, where both runs'
  ``adversarial.npz`` hold the same records (:class:`~modelsec.audits.gate.PairedRecords`), McNemar's exact
  two-sided test (:func:`modelsec.stats.mcnemar.mcnemar_exact`; a diff has no direction), significant at
  p < ``significance``; where they do not pair, a note says why;
- clean accuracy and, per membership attack, the AUC and the TPR at 0.1% FPR: "changed" when the two confidence
  intervals do not overlap (conservative, not a test).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelsec.audits.gate import PairedRecords, find_run, load_paired_records
from modelsec.core.errors import ConfigError, printable
from modelsec.results.audit import AuditResult, eps_key
from modelsec.results.diff import MembershipDiff, RobustnessDiff, RunDiff
from modelsec.stats.intervals import Interval
from modelsec.stats.mcnemar import TWO_SIDED, mcnemar_exact

if TYPE_CHECKING:
    from modelsec.store.runs import RunStore

TPR_FPR = "0.001"  # the TPR at 0.1% FPR: the membership number the diff shows


@dataclass(frozen=True, eq=False)
class DiffRun:
    """One side of a diff: the audit's result, its per-record flags (``None`` when it has no readable
    ``adversarial.npz``; ``missing`` says why), and the run as given (``source``)."""

    result: AuditResult
    records: PairedRecords | None
    source: str
    missing: str | None = None


def load_run(spec: str | Path, store: RunStore | None = None) -> DiffRun:
    """The run ``spec`` names: a ``result.json`` or the folder holding one, or a run id (or a unique prefix) in
    ``store``. ConfigError when it cannot be found or is not a finished audit; a missing or unreadable
    ``adversarial.npz`` is not an error (the diff only skips the test)."""
    text = str(spec)
    result, npz = find_run(spec, store, printable(text))
    if npz is None:
        return DiffRun(result, None, text, "no adversarial.npz")
    if not npz.is_file():
        return DiffRun(result, None, text, f"its adversarial.npz is missing ({printable(str(npz))})")
    try:
        return DiffRun(result, load_paired_records(npz), text)
    except ConfigError as e:
        return DiffRun(result, None, text, str(e))


def diff_runs(a: DiffRun, b: DiffRun, *, significance: float = 0.05) -> RunDiff:
    """Run ``a`` against run ``b`` (see the module's docstring); ``significance`` in (0, 1]."""
    if not 0.0 < significance <= 1.0:
        raise ConfigError(f"the significance must be in (0, 1], got {significance!r}")
    notes: list[str] = []
    pairing = _pairing(a, b)
    if pairing is not None:
        notes.append(f"no McNemar test: {pairing}")
    ra, rb = a.result.robustness, b.result.robustness
    keys = sorted({*(ra.robust_accuracy if ra else {}), *(rb.robust_accuracy if rb else {})}, key=float)
    robustness = [_robustness_at(float(k), a, b, significance, pairing) for k in keys]
    clean_a = (ra.clean_accuracy, ra.clean_ci) if ra else (None, None)
    clean_b = (rb.clean_accuracy, rb.clean_ci) if rb else (None, None)
    return RunDiff(
        a=a.source, b=b.source, run_id_a=a.result.run_id, run_id_b=b.result.run_id, significance=significance,
        clean_accuracy_a=clean_a[0], clean_ci_a=clean_a[1], clean_accuracy_b=clean_b[0], clean_ci_b=clean_b[1],
        clean_changed=_apart(clean_a[1], clean_b[1]), robustness=robustness, membership=_membership(a, b),
        notes=notes,
    )  # fmt: skip


def _pairing(a: DiffRun, b: DiffRun) -> str | None:
    """Why the two runs' records do not pair (``None``: they do)."""
    for side, run in (("A", a), ("B", b)):
        if run.records is None:
            return f"run {side} ({printable(run.source)}) has {run.missing or 'no per-record robust flags'}"
    assert a.records is not None and b.records is not None
    if a.records.records != b.records.records:
        return "the two runs attacked other records (their inputs or labels differ)"
    return None


def _robustness_at(eps: float, a: DiffRun, b: DiffRun, significance: float, pairing: str | None) -> RobustnessDiff:
    key = eps_key(eps)
    ra, rb = a.result.robustness, b.result.robustness
    acc_a = ra.robust_accuracy.get(key) if ra else None
    acc_b = rb.robust_accuracy.get(key) if rb else None
    ci_a = ra.robust_ci.get(key) if ra else None
    ci_b = rb.robust_ci.get(key) if rb else None
    flags_a = _flags_at(a.records, eps)
    flags_b = _flags_at(b.records, eps)
    if pairing is not None:
        note: str | None = "not paired"
    elif flags_a is None or flags_b is None:
        note = f"not paired: run {'A' if flags_a is None else 'B'} did not attack at eps={eps:g}"
    else:
        note = None
    if note is not None or flags_a is None or flags_b is None:
        return RobustnessDiff(eps, acc_a, ci_a, acc_b, ci_b, note=note)
    n_b = int(np.count_nonzero(flags_a & ~flags_b))
    n_c = int(np.count_nonzero(~flags_a & flags_b))
    p = mcnemar_exact(n_b, n_c, TWO_SIDED)
    return RobustnessDiff(eps, acc_a, ci_a, acc_b, ci_b, int(flags_a.size), n_b, n_c, p, p < significance)


def _flags_at(records: PairedRecords | None, eps: float) -> np.ndarray | None:
    if records is None:
        return None
    for e, flags in zip(records.eps, records.robust, strict=True):
        if eps_key(e) == eps_key(eps):
            return np.asarray(flags, dtype=bool)
    return None


def _membership(a: DiffRun, b: DiffRun) -> list[MembershipDiff]:
    attacks_a = {m.attack: m for m in (a.result.privacy.attacks if a.result.privacy else [])}
    attacks_b = {m.attack: m for m in (b.result.privacy.attacks if b.result.privacy else [])}
    names = list(attacks_a) + [n for n in attacks_b if n not in attacks_a]
    diffs = []
    for name in names:
        ma, mb = attacks_a.get(name), attacks_b.get(name)
        auc_ci_a, auc_ci_b = (ma.auc_ci if ma else None), (mb.auc_ci if mb else None)
        tpr_ci_a = ma.tpr_ci.get(TPR_FPR) if ma else None
        tpr_ci_b = mb.tpr_ci.get(TPR_FPR) if mb else None
        diff = MembershipDiff(
            name, ma.auc if ma else None, auc_ci_a, mb.auc if mb else None, auc_ci_b,
            ma.tpr_at_fpr.get(TPR_FPR) if ma else None, tpr_ci_a, mb.tpr_at_fpr.get(TPR_FPR) if mb else None,
            tpr_ci_b, _apart(auc_ci_a, auc_ci_b) or _apart(tpr_ci_a, tpr_ci_b),
        )  # fmt: skip
        diffs.append(diff)
    return diffs


def _apart(x: Interval | None, y: Interval | None) -> bool:
    """The two intervals do not overlap (``False`` when either is missing)."""
    if x is None or y is None:
        return False
    return x.high < y.low or y.high < x.low
