"""A policy audit's files and its run-store row: what ``modelsec audit-policy`` leaves behind; and a comparison of
policies' files (``modelsec compare-policies``).

``OUT/`` receives (each file written atomically, :mod:`modelsec.outputs.files`):

- ``episode.gif``: the attacked episode beside the clean one (:func:`modelsec.report.policy_audit.episode_gif`),
  when frames were rendered; written first, so that ``result.json`` can name it;
- ``result.json``: the :class:`~modelsec.results.policy_audit.PolicyAuditResult`;
- ``report.html``: the self-contained report (:mod:`modelsec.report.policy_audit`), the GIF embedded.

The run store (when given) then records the result (kind ``policy-audit``) and the SHA-256 of each file. A comparison
writes each policy's audit into ``OUT/<name>/`` as above, then ``OUT/comparison.json`` and ``OUT/comparison.html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelsec.audits.policy_audit import EpisodeFrames, PolicyAuditConfig, PolicyAuditOutcome, audit_policy
from modelsec.audits.policy_compare import DEFAULT_MAX_RETURN_DROP, run_policy_compare
from modelsec.core.options import check_writable_folder
from modelsec.outputs.files import OutputFolder
from modelsec.results.policy_audit import EpisodeAnimation, PolicyAuditResult, PolicyComparison

if TYPE_CHECKING:
    from collections.abc import Sequence

    from modelsec.core.progress import Progress
    from modelsec.store.runs import RunStore

ANIMATION_FILE = "episode.gif"


@dataclass(frozen=True)
class PolicyAuditFiles:
    """What :func:`write_policy_audit` returns: the result as written (naming its animation) and the files by key
    (``animation``, ``result``, ``report``)."""

    result: PolicyAuditResult
    files: dict[str, Path] = field(default_factory=dict)


def write_policy_audit(
    result: PolicyAuditResult,
    out_dir: str | Path | None,
    *,
    frames: EpisodeFrames | None = None,
    store: RunStore | None = None,
) -> PolicyAuditFiles:
    """Write the audit's files into ``out_dir`` (none without a folder; then nothing is rendered) and record the
    run in ``store`` with the files' hashes."""
    files: dict[str, Path] = {}
    if out_dir is not None:
        from modelsec.report.policy_audit import episode_gif, render_policy_audit_html  # matplotlib, Pillow

        folder = OutputFolder(out_dir)
        gif = None
        if frames is not None and len(frames.clean) and len(frames.attacked):
            labels = ("clean", f"{frames.attack}, eps {frames.eps:g}")
            gif, count, stride = episode_gif(frames.clean, frames.attacked, labels=labels)
            data = gif
            folder.write("animation", ANIMATION_FILE, lambda f: f.write(data))
            animation = EpisodeAnimation(
                file=ANIMATION_FILE, seed=frames.seed, attack=frames.attack, eps=float(frames.eps),
                clean_return=float(frames.clean_return), attacked_return=float(frames.attacked_return),
                frames=count, stride=stride,
            )  # fmt: skip
            result = replace(result, animation=animation)
        folder.write_text("result", "result.json", result.to_json() + "\n")
        folder.write_text("report", "report.html", render_policy_audit_html(result, animation=gif))
        files = folder.files
    if store is not None:
        store.record_policy_audit(result, out_dir=None if out_dir is None else str(out_dir), artifacts=files)
    return PolicyAuditFiles(result=result, files=files)


def rerender_policy_report(result_json: str | Path, out_path: str | Path) -> Path:
    """``report.html`` again from a policy audit's ``result.json`` (its GIF read from beside it)."""
    from modelsec.report.policy_audit import load_animation, write_policy_audit_html

    source = Path(result_json)
    result = PolicyAuditResult.load(source)
    return write_policy_audit_html(result, out_path, animation=load_animation(result, source.parent))


def write_policy_comparison(comparison: PolicyComparison, out_dir: str | Path | None) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.html`` into ``out_dir`` (nothing without a folder)."""
    if out_dir is None:
        return {}
    from modelsec.report.policy_audit import render_policy_comparison_html

    folder = OutputFolder(out_dir)
    folder.write_text("comparison", "comparison.json", comparison.to_json() + "\n")
    folder.write_text("html", "comparison.html", render_policy_comparison_html(comparison))
    return folder.files


def policy_audit_and_write(
    config: PolicyAuditConfig,
    *,
    out_dir: str | Path | None = None,
    store: RunStore | None = None,
    progress: Progress | None = None,
) -> PolicyAuditFiles:
    """``modelsec audit-policy``: :func:`~modelsec.audits.policy_audit.audit_policy` of ``config`` (the animated
    episode rendered when ``config.render`` and there is a folder), then :func:`write_policy_audit` into ``out_dir``
    (checked to be writable before any work)."""
    if out_dir is not None:
        check_writable_folder(out_dir)
    outcome = audit_policy(config, progress=progress, frames=config.render and out_dir is not None)
    return write_policy_audit(outcome.result, out_dir, frames=outcome.frames, store=store)


def compare_policies_and_write(
    policies: Sequence[str | Path],
    config: PolicyAuditConfig,
    *,
    out_dir: str | Path | None = None,
    store: RunStore | None = None,
    progress: Progress | None = None,
    max_return_drop: float = DEFAULT_MAX_RETURN_DROP,
) -> tuple[PolicyComparison, dict[str, Path]]:
    """``modelsec compare-policies``: each policy audited as :func:`policy_audit_and_write` does (the first is the
    baseline, whose observation scale every audit uses), its files in ``out_dir/<name>/`` as soon as it finishes,
    then ``comparison.json`` and ``comparison.html``; returns the comparison and its files."""
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        check_writable_folder(out)

    def write(name: str, outcome: PolicyAuditOutcome) -> PolicyAuditResult:
        folder = None if out is None else out / name
        return write_policy_audit(outcome.result, folder, frames=outcome.frames, store=store).result

    comparison = run_policy_compare(
        policies, config, progress=progress, max_return_drop=max_return_drop, on_audit=write,
        frames=config.render and out is not None,
    )  # fmt: skip
    return comparison, write_policy_comparison(comparison, out)
