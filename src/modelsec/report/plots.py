"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Nothing here imports :mod:`matplotlib.pyplot` or changes the global backend: each figure is a
:class:`matplotlib.figure.Figure` with its own
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, so rendering a report from a notebook or
a GUI program leaves the caller's plotting state alone.

Membership ROCs are drawn on log-log axes, as Carlini et al. recommend ("Membership Inference
Attacks From First Principles", 2022): what matters is the TPR at low FPR, which a linear ROC
hides.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from modelsec.report.tables import (
    LOW_FPRS,
    eps_label,
    fpr_label,
    norm_label,
    robustness_eps,
    tpr_at,
    worst_case,
)
from modelsec.results.audit import AttackRobustness, PrivacyResult, RobustnessResult
from modelsec.results.comparison import Comparison

# Colour-blind-safe palette (Okabe & Ito, 2008); the worst case is always black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
WORST_COLOUR = "#111111"
CHANCE_COLOUR = "#9a9a9a"
FIGSIZE = (7.0, 4.3)  # inches; shown at up to ~760 px wide
ROC_FIGSIZE = (5.6, 5.2)  # square axes for log-log
DPI = 150
MIN_FPR = 1e-4  # the left edge of a log-log ROC, unless 1/n_nonmembers is larger


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style_axes(ax: Axes) -> None:
    ax.grid(True, which="major", color="#e3e3e3", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def _yerr(acc: Sequence[float], low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    a, lo, hi = (np.asarray(v, dtype=float) for v in (acc, low, high))
    return np.vstack([np.clip(a - lo, 0.0, None), np.clip(hi - a, 0.0, None)])


def robustness_curve(result: RobustnessResult) -> Figure:
    """Robust accuracy against epsilon: a line per attack, with CI error bars, and the worst case.

    The worst case (bold) is per sample, over every attack. Every line starts at the clean accuracy
    at ``eps = 0``. Attacks with the same name but different norms get a line each. The y axis
    spans ``[0, 1]``.
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    _style_axes(ax)
    clean = result.clean_accuracy

    groups: dict[tuple[str, str], list[AttackRobustness]] = {}
    for r in result.results:
        groups.setdefault((r.attack, r.norm), []).append(r)
    several_norms = len({norm for _, norm in groups}) > 1
    for i, ((attack, norm), runs) in enumerate(groups.items()):
        runs = sorted(runs, key=lambda r: r.eps)
        acc = [clean, *(r.robust_accuracy for r in runs)]
        low = [result.clean_ci.low, *(r.ci_low for r in runs)]
        high = [result.clean_ci.high, *(r.ci_high for r in runs)]
        ax.errorbar(
            [0.0, *(r.eps for r in runs)],
            acc,
            yerr=_yerr(acc, low, high),
            label=f"{attack} ({norm_label(norm)})" if several_norms else attack,
            color=PALETTE[i % len(PALETTE)],
            marker="o",
            markersize=4,
            linewidth=1.4,
            capsize=3,
            elinewidth=1.0,
            alpha=0.9,
        )

    worst_eps, worst_acc = [0.0], [clean]
    worst_lo, worst_hi = [result.clean_ci.low], [result.clean_ci.high]
    for e in robustness_eps(result):
        w, ci = worst_case(result, e)
        if w is None:
            continue
        worst_eps.append(e)
        worst_acc.append(w)
        worst_lo.append(w if ci is None else ci.low)
        worst_hi.append(w if ci is None else ci.high)
    if len(worst_eps) > 1:
        ax.errorbar(
            worst_eps,
            worst_acc,
            yerr=_yerr(worst_acc, worst_lo, worst_hi),
            label="worst case (per sample)",
            color=WORST_COLOUR,
            marker="s",
            markersize=5,
            linewidth=2.8,
            capsize=4,
            elinewidth=1.4,
            zorder=5,
        )
    ax.errorbar(
        [0.0],
        [clean],
        yerr=_yerr([clean], [result.clean_ci.low], [result.clean_ci.high]),
        fmt="D",
        color=WORST_COLOUR,
        markersize=6,
        capsize=4,
        zorder=6,
        label=f"clean accuracy ({100 * clean:.1f}%)",
    )

    ticks = sorted({0.0, *worst_eps, *(r.eps for r in result.results)})
    ax.set_xticks(ticks, [eps_label(t) if t else "0" for t in ticks])
    right = max(ticks) if max(ticks) > 0 else 1.0
    ax.set_xlim(-0.03 * right, 1.03 * right)
    ax.set_ylim(0.0, 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    norms = ", ".join(sorted({norm_label(norm) for _, norm in groups}))
    ax.set_xlabel(f"perturbation budget ε ({norms})" if norms else "perturbation budget ε", fontsize=10)
    ax.set_ylabel("robust accuracy", fontsize=10)
    ax.set_title(f"Robust accuracy vs. ε  (n = {result.n:,})", fontsize=11, loc="left")
    ax.legend(fontsize=8.5, frameon=False, loc="best")
    return fig


def _log_percent(x: float, _pos: object = None) -> str:
    return f"{100.0 * x:g}%"


def _clip_positive(values: Sequence[float], fallback: float) -> np.ndarray:
    """``values`` with zeros (anything non-positive) raised to the smallest positive value."""
    v = np.asarray(values, dtype=float)
    positive = v[v > 0]
    floor = float(positive.min()) if positive.size else fallback
    return np.clip(v, floor, 1.0)


def membership_roc(result: PrivacyResult) -> Figure:
    """The ROC of every membership attack on log-log axes, members as the positive class.

    The FPR axis starts at ``1e-4``, or at ``1/n_nonmembers`` when that is larger (no FPR below it
    can be measured); zeros are raised to the smallest positive value so they stay on the log axes.
    The dashed diagonal is a random guess. The legend gives each attack's AUC and TPR at 0.1% FPR.
    """
    fig = _new_figure(ROC_FIGSIZE)
    ax = fig.add_subplot()
    _style_axes(ax)
    n_non = max((a.n_nonmembers for a in result.attacks), default=0)
    low = max(MIN_FPR, 1.0 / n_non) if n_non > 0 else MIN_FPR

    ax.plot([low, 1.0], [low, 1.0], linestyle="--", color=CHANCE_COLOUR, linewidth=1.0, label="chance")
    for i, a in enumerate(result.attacks):
        if not a.roc_fpr:
            continue
        fpr = _clip_positive(a.roc_fpr, low)
        tpr = _clip_positive(a.roc_tpr, low)
        tpr01, _ = tpr_at(a, LOW_FPRS[0])
        tpr_text = "n/a" if tpr01 is None else f"{100 * tpr01:.1f}%"
        label = f"{a.attack}  (AUC {a.auc:.3f}, TPR@{fpr_label(LOW_FPRS[0])} FPR {tpr_text})"
        ax.plot(fpr, tpr, color=PALETTE[i % len(PALETTE)], linewidth=1.8, label=label)

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(low, 1.0)
    ax.set_aspect("equal", adjustable="box")
    ax.xaxis.set_major_formatter(FuncFormatter(_log_percent))
    ax.yaxis.set_major_formatter(FuncFormatter(_log_percent))
    ax.set_xlabel("false positive rate (non-members flagged)", fontsize=10)
    ax.set_ylabel("true positive rate (members found)", fontsize=10)
    ax.set_title("Membership inference ROC (log-log)", fontsize=11, loc="left")
    ax.legend(fontsize=8.5, frameon=True, framealpha=0.95, edgecolor="#dddddd", loc="lower right")
    return fig


def figure_to_png_data_uri(fig: Figure, dpi: int = DPI) -> str:
    """Render ``fig`` to a base64 PNG ``data:`` URI, then close it (its artists are freed)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    finally:
        _close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _close(fig: Figure) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # only when the caller already uses pyplot; closing is then a no-op for our figures
        pyplot.close(fig)
    fig.clear()


def tradeoff_plot(comparison: Comparison) -> Figure:
    """Clean accuracy (x) against worst-case robust accuracy at the largest epsilon (y), one point per compared model,
    with confidence intervals on both axes; colour is leakage (the strongest membership attack's TPR at 0.1% FPR,
    grey without a membership result), the baseline a square, a model whose robustness is likely overestimated a
    hollow marker, a recommended one starred. The shaded band holds the models within the recommendation's accuracy
    drop of the baseline.
    """
    fig = _new_figure(FIGSIZE)
    ax = fig.add_subplot()
    _style_axes(ax)
    rec = comparison.recommendation
    eps = rec.eps
    tprs = [m.mia_tpr for m in comparison.models if m.mia_tpr is not None and np.isfinite(m.mia_tpr)]
    norm = Normalize(vmin=0.0, vmax=max([0.01, *tprs]))
    cmap = colormaps["plasma_r"]
    base = next((m for m in comparison.models if m.name == comparison.baseline), None)
    lows = [m.clean_ci.low if m.clean_ci else m.clean_accuracy for m in comparison.models]
    edge = None if base is None or base.clean_accuracy is None else base.clean_accuracy - rec.max_accuracy_drop / 100
    left = min([v for v in [*lows, edge] if v is not None], default=0.0)
    left = max(0.0, left - 0.05)
    if edge is not None:
        ax.axvspan(edge, 1.01, color="#e8f3ea", zorder=0, label=f"within {rec.max_accuracy_drop:g} points of baseline")
    labels: list[tuple[float, float, str]] = []
    for m in comparison.models:
        x, y = m.clean_accuracy, m.robust_at(eps)
        if x is None or y is None:
            continue
        xci, yci = m.clean_ci, m.robust_ci_at(eps)
        xerr = None if xci is None else _yerr([x], [xci.low], [xci.high])
        yerr = None if yci is None else _yerr([y], [yci.low], [yci.high])
        colour = CHANCE_COLOUR if m.mia_tpr is None or not np.isfinite(m.mia_tpr) else cmap(norm(m.mia_tpr))
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor="#9a9a9a", elinewidth=1.0, capsize=3, zorder=2)
        ax.scatter(
            [x],
            [y],
            s=110 if m.baseline else 80,
            marker="s" if m.baseline else "o",
            facecolors="white" if m.robustness_overestimated else [colour],
            edgecolors=[colour] if m.robustness_overestimated else WORST_COLOUR,
            linewidths=2.0 if m.robustness_overestimated else 0.8,
            zorder=4,
        )
        star = " ★" if m.name in (rec.most_robust, rec.least_leaking) else ""
        labels.append((x, y, m.name + star))
    fig.colorbar(
        _scalar_mappable(norm, cmap), ax=ax, label=f"leakage: TPR at {fpr_label(LOW_FPRS[0])} FPR", pad=0.02
    ).ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    ax.set_xlim(left, 1.01)
    ax.set_ylim(0.0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("clean accuracy", fontsize=10)
    eps_text = f" at ε = {eps_label(float(eps))}" if eps is not None else ""
    ax.set_ylabel(f"worst-case robust accuracy{eps_text}", fontsize=10)
    ax.set_title("Accuracy, robustness and leakage", fontsize=11, loc="left")
    if edge is not None:
        ax.legend(fontsize=8.5, frameon=False, loc="upper left")
    _place_labels(fig, ax, labels, split=left + 0.6 * (1.01 - left))
    return fig


def _place_labels(fig: Figure, ax: Axes, labels: list[tuple[float, float, str]], split: float) -> None:
    """A text label beside each point, moved down (with a leader line) until it overlaps no label placed before;
    points right of ``split`` get their label on their left, inside the axes."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout, so the extents below are final
    renderer = canvas.get_renderer()
    px_per_point = fig.dpi / 72.0
    placed: list[Any] = []
    for x, y, text in sorted(labels, key=lambda item: -item[1]):
        right = x > split
        dy = 6.0
        for _ in range(30):
            label = ax.annotate(
                text,
                (x, y),
                xytext=(-7 if right else 7, dy),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=8.5,
                zorder=5,
                arrowprops=None if dy == 6.0 else {"arrowstyle": "-", "color": CHANCE_COLOUR, "linewidth": 0.8},
            )
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
            dy -= box.height / px_per_point + 2.0
        placed.append(box)


def _scalar_mappable(norm: Normalize, cmap: Colormap) -> ScalarMappable:
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    mappable.set_array([])
    return mappable
