"""The comparison report: a :class:`~modelsec.results.comparison.Comparison` as one self-contained HTML page and
as Markdown.

Both show one table (per model: defense, clean accuracy, worst-case robust accuracy per epsilon, the strongest
membership attack's AUC and TPR at 0.1% FPR, its empirical epsilon lower bound, the DP claim, training time, the
verdict and flags), the recommendation rule in words and its outcome, and a link to each model's own
``report.html``. The HTML page adds the trade-off plot (:func:`modelsec.report.plots.tradeoff_plot`), embedded as a
PNG ``data:`` URI like every figure of the audit report; nothing is fetched and no script runs. Every string from
the comparison is escaped (HTML by the template engine, Markdown by :func:`~modelsec.report.markdown.md_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from modelsec.report import tables
from modelsec.report.html import _environment
from modelsec.report.markdown import _table, gate_markdown, md_code, md_text
from modelsec.report.plots import figure_to_png_data_uri, tradeoff_plot
from modelsec.results.audit import OVERESTIMATED
from modelsec.results.comparison import Comparison, ModelSummary

TEMPLATE = "comparison.html.j2"
_SAFE_DIR = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ComparisonRow:
    """One model, formatted for both renderers."""

    name: str
    link: str | None  # relative URL of the model's report.html, None when it was not written
    baseline: bool
    defense: str
    defense_config: str
    guarantee: str
    clean: tables.Rate
    robust: list[tables.Rate | None]  # one per comparison.eps_keys
    mia_attack: str
    auc: str
    auc_ci: str
    tpr: tables.Rate
    epsilon: str
    dp: str
    training: str
    level: str
    level_label: str
    headline: str
    flags: list[str]
    overestimated: bool
    tags: list[str]


def report_link(m: ModelSummary) -> str | None:
    """The model's ``report.html`` relative to the comparison's folder; ``None`` for a folder name that is not a
    plain relative name (a hand-edited comparison.json cannot smuggle a ``javascript:`` URL into the page)."""
    if m.out_dir is None or not _SAFE_DIR.match(m.out_dir) or m.out_dir in (".", ".."):
        return None
    return f"{quote(m.out_dir)}/report.html"


def dp_text(m: ModelSummary) -> str:
    """``"ε 2.95 (δ 1e-05)"``, or an em dash when the defense claims no differential privacy."""
    if m.dp_epsilon is None:
        return tables.DASH
    delta = f" (δ {m.dp_delta:g})" if m.dp_delta is not None else ""
    return f"ε {m.dp_epsilon:.2f}{delta}"


def comparison_rows(c: Comparison) -> list[ComparisonRow]:
    rec = c.recommendation
    rows = []
    for m in c.models:
        tags = [
            t for t, hit in (("most robust", rec.most_robust), ("least leaking", rec.least_leaking)) if hit == m.name
        ]
        rows.append(
            ComparisonRow(
                name=m.name,
                link=report_link(m),
                baseline=m.baseline,
                defense=m.defense or ("none recorded" if not m.baseline else "baseline"),
                defense_config=tables.value_text(m.defense_config) if m.defense_config else "",
                guarantee=m.guarantee or "",
                clean=tables.Rate.of_interval(m.clean_accuracy, m.clean_ci),
                robust=[
                    None if m.robust_at(k) is None else tables.Rate.of_interval(m.robust_at(k), m.robust_ci_at(k))
                    for k in c.eps_keys
                ],
                mia_attack=m.mia_attack or "",
                auc=tables.num(m.mia_auc),
                auc_ci=""
                if m.mia_auc is None or m.mia_auc_ci is None
                else f"{tables.num(m.mia_auc_ci.low)}–{tables.num(m.mia_auc_ci.high)}",
                tpr=_tpr_rate(m),
                epsilon=tables.epsilon_text(m.epsilon_lower_bound),
                dp=dp_text(m),
                training=tables.duration(m.training_seconds),
                level=tables.verdict_level(m.verdict_level),
                level_label=tables.LEVEL_LABELS.get(m.verdict_level, m.verdict_level.upper() or "UNKNOWN"),
                headline=m.verdict_headline,
                flags=list(m.flags),
                overestimated=m.robustness_overestimated,
                tags=tags,
            )
        )
    return rows


def _tpr_rate(m: ModelSummary) -> tables.Rate:
    """TPR at 0.1% FPR with two decimals: at this FPR the rates are small."""
    if m.mia_tpr is None:
        return tables.Rate(tables.DASH)
    value = f"{100 * m.mia_tpr:.2f}%"
    ci = m.mia_tpr_ci
    return tables.Rate(value, "" if ci is None else f"{100 * ci.low:.2f}–{100 * ci.high:.2f}%")


def _eps_labels(c: Comparison) -> list[str]:
    return [tables.eps_label(float(k)) for k in c.eps_keys]


def render_comparison_html(c: Comparison) -> str:
    """The comparison as one self-contained HTML page."""
    rec = c.recommendation
    has_plot = any(m.clean_accuracy is not None and m.robust_at(rec.eps) is not None for m in c.models)
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            c=c,
            rec=rec,
            rows=comparison_rows(c),
            eps_labels=_eps_labels(c),
            eps_largest=None if rec.eps is None else tables.eps_label(float(rec.eps)),
            norm=tables.norm_label(str(c.settings.get("norm", "linf"))),
            plot=figure_to_png_data_uri(tradeoff_plot(c)) if has_plot else None,
            settings=[(k, tables.value_text(v)) for k, v in c.settings.items() if k != "verdict_rule"],
            modelsec_version=c.versions.get("modelsec", ""),
            overestimated=OVERESTIMATED,
        )
    )


def write_comparison_html(c: Comparison, path: str | Path) -> Path:
    out = Path(path)
    out.write_text(render_comparison_html(c), encoding="utf-8")
    return out


def _rate(rate: tables.Rate | None) -> str:
    if rate is None:
        return tables.DASH
    return f"{rate.value} ({rate.ci})" if rate.ci else rate.value


def render_comparison_markdown(c: Comparison) -> str:
    """The comparison's table, recommendation and notes as GitHub-flavoured Markdown (no plot)."""
    rec = c.recommendation
    rows = comparison_rows(c)
    norm = tables.norm_label(str(c.settings.get("norm", "linf")))
    out = [
        f"# modelsec comparison: {md_text(c.baseline)} and {len(c.models) - 1} hardened model"
        + ("s" if len(c.models) != 2 else ""),
        "",
        f"{md_text(c.created_at)} · data: {md_text(c.data.get('name', ''))} (split seed {c.data.get('split_seed')}) · "
        f"seed {c.settings.get('seed')} · preset {md_code(c.settings.get('preset'))}",
        "",
        "## Recommendation",
        "",
        *(f"> **{md_text(s)}**" for s in rec.outcome()),
        "",
        f"**Rule.** {md_text(rec.rule)}",
    ]
    if rec.excluded:
        out += ["", *(f"- Not eligible: {md_text(n)}: {md_text(why)}" for n, why in rec.excluded.items())]
    if rec.notes:
        out += ["", *(f"- {md_text(n)}" for n in rec.notes)]
    if c.gate_passed is not None:
        out += ["", f"## Policy: {'✅ every model passed' if c.gate_passed else '❌ failed'}"]
        for m in c.models:
            if m.gate is not None:
                name = md_text(m.name) + (" (baseline)" if m.baseline else "")
                out += ["", *gate_markdown(m.gate, heading=f"### {name}")]
    header = [
        "Model",
        "Defense",
        "Clean acc.",
        *(f"Robust @ ε = {e} ({norm})" for e in _eps_labels(c)),
        "MIA AUC",
        "TPR @ 0.1% FPR",
        "ε lower bound",
        "DP ε",
        "Training",
        "Verdict / flags",
    ]
    body = []
    for r in rows:
        name = f"[{md_text(r.name)}]({r.link})" if r.link else md_text(r.name)
        if r.tags:
            name += " ★ " + ", ".join(r.tags)
        verdict = " ".join([r.level_label, *(md_text(f) for f in r.flags)])
        if r.overestimated:
            verdict += f" ({OVERESTIMATED})"
        auc = tables.DASH if r.auc == tables.DASH else f"{r.auc} ({r.auc_ci}, {md_text(r.mia_attack)})"
        body.append(
            [
                name,
                md_text(r.defense),
                _rate(r.clean),
                *(_rate(x) for x in r.robust),
                auc,
                _rate(r.tpr),
                r.epsilon,
                r.dp,
                r.training,
                verdict,
            ]
        )
    out += ["", "## Models", ""]
    out += _table(header, body, [False, False, *([True] * (len(header) - 3)), False])
    out += [
        "",
        "Robust accuracy is the per-sample worst case over every attack; membership numbers are the strongest "
        "attack's (members are the positive class); the ε lower bound is empirical evidence, never a guarantee; "
        "DP ε is the claim the defense records. Ranges are 95% confidence intervals.",
    ]
    if c.notes:
        out += ["", "## Notes", "", *(f"- {md_text(n)}" for n in c.notes)]
    out += ["", "## Settings", ""]
    settings = [(md_text(k), md_code(tables.value_text(v))) for k, v in c.settings.items() if k != "verdict_rule"]
    out += _table(["Setting", "Value"], settings, [False, False])
    out.append("")
    return "\n".join(out)


def write_comparison_markdown(c: Comparison, path: str | Path) -> Path:
    out = Path(path)
    out.write_text(render_comparison_markdown(c), encoding="utf-8")
    return out
