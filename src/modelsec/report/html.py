"""A self-contained HTML report of an :class:`~modelsec.results.AuditResult`.

The page is one file: inline CSS, plots embedded as base64 PNG ``data:`` URIs, no JavaScript and
nothing fetched from the network, so it can be attached to a ticket or opened offline. Every string
from the result is HTML-escaped by the template engine (``autoescape=True``): a model path or an
attack name cannot inject markup.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from modelsec.report import tables
from modelsec.report.plots import figure_to_png_data_uri, membership_roc, robustness_curve
from modelsec.results import AuditResult

TEMPLATE = "report.html.j2"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("modelsec", "report/templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=tables.pct,
        num=tables.num,
        count=tables.count,
        duration=tables.duration,
        value_text=tables.value_text,
        eps_label=tables.eps_label,
    )
    return env


def _context(result: AuditResult) -> dict[str, Any]:
    rob, priv = result.robustness, result.privacy
    ctx: dict[str, Any] = {
        "r": result,
        "model_name": tables.model_name(result),
        "level": tables.verdict_level(result.verdict.level),
        "level_label": tables.LEVEL_LABELS.get(result.verdict.level, result.verdict.level.upper() or "UNKNOWN"),
        "fpr_labels": [tables.fpr_label(f) for f in tables.LOW_FPRS],
        "modelsec_version": result.versions.get("modelsec", ""),
    }
    if rob is not None:
        ctx["rob_table"] = tables.robustness_table(rob)
        ctx["clean"] = tables.Rate.of_interval(rob.clean_accuracy, rob.clean_ci)
        ctx["checks"] = tables.check_rows(rob)
        ctx["rob_ci_note"] = tables.ci_note(tables.robustness_intervals(rob))
        ctx["rob_plot"] = figure_to_png_data_uri(robustness_curve(rob))
        ctx["attack_params"] = [
            (
                a.attack,
                tables.norm_label(a.norm),
                tables.eps_label(a.eps),
                a.params,
                tables.duration(a.seconds),
            )
            for a in rob.results
        ]
    if priv is not None:
        ctx["priv_rows"] = tables.privacy_rows(priv)
        ctx["priv_ci_note"] = tables.ci_note(tables.privacy_intervals(priv))
        has_roc = any(a.roc_fpr for a in priv.attacks)
        ctx["roc_plot"] = figure_to_png_data_uri(membership_roc(priv)) if has_roc else None
    return ctx


def render_html(result: AuditResult) -> str:
    """The audit report as one self-contained HTML page (UTF-8 text)."""
    return _environment().get_template(TEMPLATE).render(**_context(result))


def write_html(result: AuditResult, path: str | Path) -> Path:
    """Write :func:`render_html` of ``result`` to ``path`` (UTF-8) and return the path."""
    out = Path(path)
    out.write_text(render_html(result), encoding="utf-8")
    return out
