"""An audit's files and its run-store row: what ``modelsec audit`` and :func:`modelsec.audit` leave behind.

``OUT/`` receives (each file written atomically, :mod:`modelsec.outputs.files`):

- ``adversarial.npz``: the clean inputs, labels and worst-case adversarial examples per epsilon
  (:meth:`~modelsec.audits.robustness.RobustnessRun.npz_arrays`), written first so that the report can draw them;
- ``result.json``: the :class:`~modelsec.results.audit.AuditResult`, whose ``robustness.adversarial_file`` names the
  arrays;
- ``report.html``: the self-contained report (:mod:`modelsec.report`), with thumbnails of the most exposed members
  when the inputs are images;
- ``exposed_records.csv``: the most exposed members (:mod:`modelsec.outputs.exposed_records`), when there are any.

The run store (when given) then records the result and the SHA-256 of each file. :func:`audit_and_write` is the
whole of ``modelsec audit``: the workflow (:func:`~modelsec.audits.run_audit`, checkpointing into ``OUT``), these
files, then the checkpoint deleted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelsec.audits.gate import Baseline, Gate, PairedRecords, evaluate_gate, load_paired_records, paired_records
from modelsec.audits.runner import AuditOutcome, run_audit
from modelsec.core.errors import ConfigError
from modelsec.outputs.exposed_records import exposed_records_csv
from modelsec.outputs.files import OutputFolder

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from modelsec.data.dataset import Splits
    from modelsec.data.user_split import SplitFiles
    from modelsec.models.adapters.endpoint import ScoreFunction
    from modelsec.models.base import Classifier
    from modelsec.store.runs import RunStore

ADVERSARIAL_FILE = "adversarial.npz"


def write_audit(outcome: AuditOutcome, out_dir: str | Path | None, *, store: RunStore | None = None) -> AuditOutcome:
    """Write the audit's files into ``out_dir`` (none without a folder) and record the run in ``store`` (with the
    files' hashes); returns the outcome with the result as written (naming its arrays) and the files, by key
    (``adversarial``, ``result``, ``report``, ``exposed``).

    An outcome ``reused`` from a finished audit's checkpoint had its files written and its run recorded when it
    finished: it is returned as it is. The audit's checkpoint is left alone (the caller settles it)."""
    if outcome.reused:
        return outcome
    result = outcome.result
    files: dict[str, Path] = {}
    if out_dir is not None:
        from modelsec.report.html import load_examples, render_html  # matplotlib: only once there is a result

        folder = OutputFolder(out_dir)
        if outcome.robustness_run is not None and result.robustness is not None:
            arrays = outcome.robustness_run.npz_arrays()
            folder.write("adversarial", ADVERSARIAL_FILE, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]
            result = replace(result, robustness=replace(result.robustness, adversarial_file=ADVERSARIAL_FILE))
        folder.write_text("result", "result.json", result.to_json() + "\n")
        report = render_html(result, examples=load_examples(result, folder.path), exposed_images=outcome.exposed_images)
        folder.write_text("report", "report.html", report)
        if result.privacy is not None and result.privacy.exposed_records:
            folder.write_text("exposed", "exposed_records.csv", exposed_records_csv(result.privacy.exposed_records))
        files = folder.files
    if store is not None:
        store.record_audit(result, out_dir=None if out_dir is None else str(out_dir), artifacts=files)
    return replace(outcome, result=result, files=files)


def audit_and_write(
    model: str | Path | nn.Module | Classifier | ScoreFunction | Callable[[Any], Any] | None = None,
    data: str | Splits | SplitFiles | None = None,
    *,
    out_dir: str | Path | None = None,
    store: RunStore | None = None,
    gate: Gate | None = None,
    baseline: Baseline | None = None,
    **options: Any,
) -> AuditOutcome:
    """``modelsec audit`` and :func:`modelsec.audit`: :func:`~modelsec.audits.run_audit` of ``model`` on ``data``
    with ``options`` (``config``, ``arch``, ``progress``, ``resume``, ...), then :func:`write_audit`.

    ``out_dir`` is the audit's checkpoint folder too: :func:`~modelsec.audits.run_audit` checks that it is
    writable before any work and checkpoints the audit there while it runs; the checkpoint is deleted once the files
    are written. ``store``: the :class:`~modelsec.store.RunStore` to record the run in; its signal cache keeps the
    reference models' signals.

    ``gate``: a policy (:mod:`modelsec.audits.gate`) evaluated on the result before its files are written, so that
    ``result.json`` and the report hold its outcome (``result.gate``). A rule the result cannot answer (an eps not
    run, a privacy rule without a privacy part) raises its :class:`~modelsec.core.errors.ConfigError` once the
    files are written: nothing is lost.

    ``baseline``: the run the gate's baseline rules compare with (:func:`~modelsec.audits.gate.load_baseline`),
    on this audit's per-record robust flags (those of ``adversarial.npz``)."""
    cache = None if store is None else store.signal_cache
    outcome = run_audit(model, data, checkpoint_dir=out_dir, cache=cache, **options)
    error: ConfigError | None = None
    if gate is not None:
        outcome, error = gate_outcome(gate, outcome, baseline=baseline)
    outcome = write_audit(outcome, out_dir, store=store)
    if outcome.checkpoint is not None:
        outcome.checkpoint.delete()
    if error is not None:
        raise error
    return outcome


def gate_outcome(
    gate: Gate, outcome: AuditOutcome, *, baseline: Baseline | None = None
) -> tuple[AuditOutcome, ConfigError | None]:
    """``outcome`` with ``gate`` evaluated on its result (``result.gate``), its baseline rules on its per-record
    flags against ``baseline``'s; or ``outcome`` unchanged and the ConfigError of a rule the audit cannot answer,
    for the caller to raise once the files are written (nothing lost)."""
    try:
        records = audit_records(outcome) if gate.needs_baseline else None
        gated = evaluate_gate(gate, outcome.result, records=records, baseline=baseline)
    except ConfigError as e:
        return outcome, e
    return replace(outcome, result=replace(outcome.result, gate=gated)), None


def audit_records(outcome: AuditOutcome) -> PairedRecords | None:
    """The audit's per-record robust flags: from its arrays, or for an audit reused from its checkpoint, from the
    ``adversarial.npz`` written for it then; ``None`` without either."""
    if outcome.robustness_run is not None:
        return paired_records(outcome.robustness_run.npz_arrays())
    written = outcome.files.get("adversarial")
    return None if written is None else load_paired_records(written)
