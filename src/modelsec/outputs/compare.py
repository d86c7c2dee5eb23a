"""A comparison's files: every model's audit in ``OUT/<name>/`` (as :mod:`modelsec.outputs.audit` writes an audit,
each as soon as it finishes), then ``OUT/comparison.json``, ``OUT/comparison.html`` and ``OUT/comparison.md``.

The audits are written while the comparison runs so that an interrupted comparison leaves every finished audit in
its folder: its checkpoint (``OUT/<name>/audit.ckpt``) then holds the finished audit, which a rerun reuses without
rewriting anything (:func:`~modelsec.audits.compare.run_compare`); the checkpoints are deleted once the comparison
is written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsec.audits.compare import CompareOutcome, run_compare
from modelsec.audits.gate import Baseline, Gate
from modelsec.audits.runner import AuditOutcome
from modelsec.core.errors import ConfigError
from modelsec.outputs.audit import audit_records, gate_outcome, write_audit
from modelsec.outputs.files import OutputFolder

if TYPE_CHECKING:
    from collections.abc import Sequence

    from modelsec.store.runs import RunStore


def write_compare(outcome: CompareOutcome, out_dir: str | Path | None) -> CompareOutcome:
    """Write the comparison into ``out_dir`` (nothing without a folder), each model's summary naming its audit's
    folder ``<name>`` beside it (where :func:`compare_and_write` wrote it), and delete the finished audits' kept
    checkpoints; returns the outcome with the comparison as written and its files (``comparison``, ``html``,
    ``markdown``)."""
    if out_dir is None:
        return outcome
    from modelsec.report.comparison import render_comparison_html, render_comparison_markdown

    c = outcome.comparison
    comparison = replace(c, models=[replace(m, out_dir=m.name) for m in c.models])
    folder = OutputFolder(out_dir)
    folder.write_text("comparison", "comparison.json", comparison.to_json() + "\n")
    folder.write_text("html", "comparison.html", render_comparison_html(comparison))
    folder.write_text("markdown", "comparison.md", render_comparison_markdown(comparison))
    for audit in outcome.audits.values():
        if audit.checkpoint is not None:
            audit.checkpoint.delete()
    return replace(outcome, comparison=comparison, files=folder.files)


def compare_and_write(
    baseline: str | Path,
    hardened: Sequence[str | Path],
    *,
    out_dir: str | Path | None = None,
    store: RunStore | None = None,
    gate: Gate | None = None,
    **options: Any,
) -> CompareOutcome:
    """``modelsec compare`` and :func:`modelsec.compare`: :func:`~modelsec.audits.compare.run_compare` with
    ``options`` (``data``, ``config``, ``max_accuracy_drop``, ``progress``, ``resume``, ...), each model's audit
    written to ``out_dir/<name>/`` and recorded in ``store`` as it finishes, then :func:`write_compare`.

    ``out_dir`` holds the audits' checkpoints too (checked to be writable before any work). ``store``: the
    :class:`~modelsec.store.RunStore` to record each audit in; its signal cache keeps the reference models'
    signals (without a store, a temporary cache for this comparison does).

    ``gate``: a policy evaluated on every model's audit before its files are written (its ``result.json``, its
    report and its row of the comparison hold the outcome). Its baseline rules compare each hardened model with the
    baseline model (the first, audited first, on the same records); the baseline model is checked against the
    other rules. A rule an audit cannot answer raises its ConfigError once every file is written."""
    out = None if out_dir is None else Path(out_dir)
    paired: list[Baseline] = []  # the baseline model's audit, once it is done
    errors: list[ConfigError] = []

    def write_model_audit(name: str, audit: AuditOutcome) -> AuditOutcome:
        if gate is not None:
            rules = gate if paired else gate.without_baseline_rules()
            audit, error = gate_outcome(rules, audit, baseline=paired[0] if paired else None)
            errors.extend([error] if error is not None else [])
        written = write_audit(audit, None if out is None else out / name, store=store)
        if gate is not None and not paired and gate.needs_baseline:
            paired.append(_baseline_model(name, written))
        return written

    cache = None if store is None else store.signal_cache
    outcome = run_compare(baseline, hardened, checkpoint_dir=out, cache=cache, on_audit=write_model_audit, **options)
    written = write_compare(outcome, out)
    if errors:
        raise errors[0]
    return written


def _baseline_model(name: str, audit: AuditOutcome) -> Baseline:
    """The comparison's baseline model as the baseline of the policy's baseline rules: its result and its
    per-record robust flags."""
    records = audit_records(audit)
    if records is None:
        raise ConfigError(f"the baseline model {name} has no per-record robust flags for the policy's baseline rules")
    return Baseline(audit.result, records, name)
