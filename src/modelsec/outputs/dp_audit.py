"""A one-run privacy audit's files: ``dp_audit.json`` (the :class:`~modelsec.results.dp_audit.DPAuditResult`) and
``dp_audit.html`` (:mod:`modelsec.report.dp_audit`), what ``modelsec audit-dp`` leaves behind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from modelsec.audits.dp_audit import run_dp_audit
from modelsec.audits.gate import Gate, check_dp_audit_gate, evaluate_gate
from modelsec.core.options import check_writable_folder
from modelsec.outputs.files import OutputFolder
from modelsec.results.dp_audit import DPAuditResult


def write_dp_audit(result: DPAuditResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``dp_audit.json`` and ``dp_audit.html`` into ``out_dir``; returns them by key (``result``,
    ``report``)."""
    from modelsec.report.dp_audit import render_dp_audit_html

    folder = OutputFolder(out_dir)
    folder.write_text("result", "dp_audit.json", result.to_json() + "\n")
    folder.write_text("report", "dp_audit.html", render_dp_audit_html(result))
    return folder.files


def dp_audit_and_write(
    defense: str, *, out_dir: str | Path | None = None, gate: Gate | None = None, **options: Any
) -> tuple[DPAuditResult, dict[str, Path]]:
    """``modelsec audit-dp``: :func:`~modelsec.audits.dp_audit.run_dp_audit` of ``defense`` with ``options``
    (``data``, ``config``, ``canaries``, ``seed``, ``runs``, ``executor``, ...), then :func:`write_dp_audit` into
    ``out_dir`` (checked to be writable before any work); returns the result and the files written (none without a
    folder). ``gate``: a policy of the rules audit-dp answers (checked before any work,
    :func:`~modelsec.audits.gate.check_dp_audit_gate`), evaluated on the result before its files are written."""
    if gate is not None:
        check_dp_audit_gate(gate)
    if out_dir is not None:
        check_writable_folder(out_dir)
    result = run_dp_audit(defense, **options)
    if gate is not None:
        result = replace(result, gate=evaluate_gate(gate, result))
    return result, ({} if out_dir is None else write_dp_audit(result, out_dir))
