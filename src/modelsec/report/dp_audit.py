"""``dp_audit.html``: a small self-contained page for one one-run privacy audit
(:class:`~modelsec.results.dp_audit.DPAuditResult`): the verdict, the claimed epsilon beside every accountant's value
and the empirical lower bound, for an audit of several runs a table of the runs, and the canaries' score histograms,
included vs excluded.

One file: inline CSS, the histogram as a base64 PNG ``data:`` URI, no JavaScript; every string from the result is
HTML-escaped by the template engine. Never runs a model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from modelsec.report.plots import PALETTE, _new_figure, _style_axes, figure_to_png_data_uri
from modelsec.results.dp_audit import DPAuditResult

TEMPLATE = "dp_audit.html.j2"
HISTOGRAM_BINS = 40


def score_histograms(result: DPAuditResult) -> Figure:
    """The canaries' membership scores, included (trained on) vs excluded, on shared bins; the guesses at the
    bound's maximum are marked: "in" right of the dashed line, "out" left of the dotted one."""
    fig = _new_figure((7.0, 3.6))
    ax = fig.add_subplot()
    _style_axes(ax)
    inc = np.asarray(result.included_scores, dtype=np.float64)
    exc = np.asarray(result.excluded_scores, dtype=np.float64)
    both = np.concatenate([inc, exc])
    if both.size:
        low, high = float(both.min()), float(both.max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, HISTOGRAM_BINS + 1).tolist()
        ax.hist(exc, bins=bins, color=PALETTE[1], alpha=0.6, label=f"excluded ({exc.size})")
        ax.hist(inc, bins=bins, color=PALETTE[0], alpha=0.6, label=f"included ({inc.size})")
        ranked = np.sort(both)
        if result.k_plus:
            ax.axvline(float(ranked[-result.k_plus]), color="#111111", linestyle="--", linewidth=1.0,
                       label=f"top {result.k_plus}: guessed in")  # fmt: skip
        if result.k_minus:
            ax.axvline(float(ranked[result.k_minus - 1]), color="#111111", linestyle=":", linewidth=1.2,
                       label=f"bottom {result.k_minus}: guessed out")  # fmt: skip
    ax.set_xlabel(f"canary score ({result.score} of the canary's label; higher: more likely included)", fontsize=10)
    ax.set_ylabel("canaries", fontsize=10)
    ax.set_title("Canary scores, included vs excluded", fontsize=11, loc="left")
    ax.legend(fontsize=8.5, frameon=True, framealpha=0.95, edgecolor="#dddddd")
    return fig


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("modelsec", "report/templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_dp_audit_html(result: DPAuditResult) -> str:
    """The page as a string."""
    from modelsec.core.version import __version__

    accountants = sorted(result.epsilons.items())
    training = {k: v for k, v in result.training.items() if k not in ("config",)}
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            r=result,
            verdict=result.verdict(),
            status="unclaimed" if result.claimed_epsilon is None else ("ok" if result.passed else "fail"),
            accountants=accountants,
            plot=figure_to_png_data_uri(score_histograms(result)),
            training=sorted(training.items()),
            config=sorted((result.training.get("config") or {}).items()),
            modelsec_version=__version__,
        )
    )


def write_dp_audit_html(result: DPAuditResult, path: str | Path) -> Path:
    """Write the page to ``path``; returns it."""
    out = Path(path)
    out.write_text(render_dp_audit_html(result), encoding="utf-8")
    return out
