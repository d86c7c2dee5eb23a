"""``report.html`` of a policy audit (:class:`~modelsec.results.policy_audit.PolicyAuditResult`) and
``comparison.html`` of a comparison of policies (:class:`~modelsec.results.policy_audit.PolicyComparison`).

The audit's page: the verdict at the top; the threat model (norm, eps, each observation dimension's standard
deviation as recorded, the bounds); a table per eps and attack (mean return, its bootstrap CI, the share of steps
attacked, queries per episode); the return-vs-eps curves of every attack with the random-noise baseline and the
per-episode worst case, with their CIs; each episode's worst-case return; and an animated image (GIF) of an attacked
episode beside the clean one of the same seed, from the environment's ``rgb_array`` frames.

One file: inline CSS, figures as base64 PNG ``data:`` URIs, the animation as a base64 GIF, no JavaScript; every
string from the result is HTML-escaped by the template engine. Never runs a policy or an environment: the frames
are given (:func:`episode_gif` turns them into the GIF the outputs layer writes beside ``result.json``).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from modelsec.report.plots import (
    CHANCE_COLOUR,
    PALETTE,
    WORST_COLOUR,
    _new_figure,
    _style_axes,
    _yerr,
    figure_to_png_data_uri,
)
from modelsec.results.audit import eps_key
from modelsec.results.policy_audit import RANDOM_ATTACK, PolicyAuditResult, PolicyComparison

TEMPLATE = "policy_audit.html.j2"
COMPARISON_TEMPLATE = "policy_comparison.html.j2"
GIF_MAX_BYTES = 1_500_000
"""The animated image's size limit: frames are subsampled (then shrunk) until the GIF fits."""
GIF_MAX_FRAMES = 80
GIF_PANEL_WIDTH = 240
GIF_STEP_MS = 20  # classic-control environments render at 50 steps a second
GIF_MIN_FRAME_MS, GIF_MAX_FRAME_MS = 40, 160


# -- figures ---------------------------------------------------------------------------------------------------------


def _attack_colours(names: Sequence[str]) -> dict[str, str]:
    others = [n for n in names if n != RANDOM_ATTACK]
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(others)}
    colours[RANDOM_ATTACK] = CHANCE_COLOUR
    return colours


def return_curves(result: PolicyAuditResult) -> Figure:
    """Mean return against eps: a line per attack with its bootstrap CI as error bars, the random-noise baseline
    dashed grey, the per-episode worst case bold black; every line starts at the clean mean (eps 0)."""
    fig = _new_figure()
    ax = fig.add_subplot()
    _style_axes(ax)
    clean = result.clean
    colours = _attack_colours(result.attack_names)
    for name in result.attack_names:
        runs = sorted((r for r in result.results if r.attack == name), key=lambda r: r.eps)
        mean = [clean.mean_return, *(r.mean_return for r in runs)]
        low = [clean.ci.low, *(r.ci.low for r in runs)]
        high = [clean.ci.high, *(r.ci.high for r in runs)]
        baseline = name == RANDOM_ATTACK
        ax.errorbar(
            [0.0, *(r.eps for r in runs)],
            mean,
            yerr=_yerr(mean, low, high),
            label="random noise (baseline)" if baseline else name,
            color=colours[name],
            linestyle="--" if baseline else "-",
            marker="o",
            markersize=4,
            linewidth=1.4,
            capsize=3,
            elinewidth=1.0,
            alpha=0.9,
        )
    worst = sorted(result.worst_case, key=lambda w: w.eps)
    if worst:
        mean = [clean.mean_return, *(w.mean_return for w in worst)]
        low = [clean.ci.low, *(w.ci.low for w in worst)]
        high = [clean.ci.high, *(w.ci.high for w in worst)]
        ax.errorbar([0.0, *(w.eps for w in worst)], mean, yerr=_yerr(mean, low, high),
                    label="worst case (per episode)", color=WORST_COLOUR, marker="s", markersize=5, linewidth=2.6,
                    capsize=4, elinewidth=1.4, zorder=5)  # fmt: skip
    ax.errorbar([0.0], [clean.mean_return], yerr=_yerr([clean.mean_return], [clean.ci.low], [clean.ci.high]),
                fmt="D", color=WORST_COLOUR, markersize=6, capsize=4, zorder=6,
                label=f"clean ({clean.mean_return:.1f})")  # fmt: skip
    ax.set_xlabel(f"eps ({result.norm}, in standard deviations of each observation dimension)", fontsize=10)
    ax.set_ylabel(f"mean return over {result.episodes} episodes", fontsize=10)
    ax.set_title(f"{result.env_id}: return under attack (95% bootstrap CIs)", fontsize=11, loc="left")
    ax.legend(fontsize=8.5, frameon=True, framealpha=0.95, edgecolor="#dddddd")
    return fig


def worst_case_strip(result: PolicyAuditResult) -> Figure:
    """Each episode's return: clean, and the worst case over attacks at each eps, coloured by the attack that gave
    it (points spread sideways so that equal returns stay visible)."""
    fig = _new_figure((7.0, 3.8))
    ax = fig.add_subplot()
    _style_axes(ax)
    colours = _attack_colours(result.attack_names)
    columns = [("clean", result.clean.returns, ["clean"] * len(result.clean.returns))]
    for w in sorted(result.worst_case, key=lambda w: w.eps):
        columns.append((f"eps {w.eps:g}", w.returns, w.attacks))
    labelled: set[str] = set()
    for i, (_, returns, attacks) in enumerate(columns):
        n = len(returns)
        offsets = np.zeros(n) if n < 2 else np.linspace(-0.28, 0.28, n)
        for j, (value, attack) in enumerate(zip(returns, attacks, strict=True)):
            colour = WORST_COLOUR if attack == "clean" else colours.get(attack, WORST_COLOUR)
            label = None if attack in labelled else ("clean" if attack == "clean" else f"worst: {attack}")
            labelled.add(attack)
            ax.scatter([i + offsets[j]], [value], s=14, color=colour, alpha=0.8, label=label, linewidths=0)
        if n:
            ax.hlines(float(np.mean(returns)), i - 0.35, i + 0.35, color="#333333", linewidth=1.6)
    ax.set_xticks(range(len(columns)), [c[0] for c in columns])
    ax.set_ylabel("episode return", fontsize=10)
    ax.set_title("Worst case over attacks, per episode (bar: mean)", fontsize=11, loc="left")
    ax.legend(fontsize=8, frameon=True, framealpha=0.95, edgecolor="#dddddd", loc="best")
    return fig


# -- the animated episode --------------------------------------------------------------------------------------------


def episode_gif(
    clean: Sequence[np.ndarray],
    attacked: Sequence[np.ndarray],
    *,
    labels: tuple[str, str] = ("clean", "attacked"),
    max_frames: int = GIF_MAX_FRAMES,
    panel_width: int = GIF_PANEL_WIDTH,
    max_bytes: int = GIF_MAX_BYTES,
) -> tuple[bytes, int, int]:
    """An animated GIF of two episodes side by side (``rgb_array`` frames ``(H, W, 3)`` uint8), labelled; the
    shorter episode holds its last frame, dimmed, once it has ended. Every ``stride``-th step is shown (at most
    ``max_frames`` frames), each panel shrunk to ``panel_width`` pixels; while the GIF exceeds ``max_bytes`` the
    stride doubles, then the panels shrink. Returns ``(gif, frames, stride)``."""
    from PIL import Image, ImageDraw

    if not clean or not attacked:
        raise ValueError("both episodes need at least one frame")
    length = max(len(clean), len(attacked))
    stride = max(1, math.ceil(length / max_frames))
    width = panel_width
    while True:
        steps = list(range(0, length, stride))
        if steps[-1] != length - 1:
            steps.append(length - 1)
        images = [_side_by_side(clean, attacked, t, width, labels, Image, ImageDraw) for t in steps]
        palette = images[0].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
        frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
        buf = io.BytesIO()
        duration = min(GIF_MAX_FRAME_MS, max(GIF_MIN_FRAME_MS, GIF_STEP_MS * stride))  # about real time
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0,
                       optimize=True)  # fmt: skip
        data = buf.getvalue()
        if len(data) <= max_bytes or (len(steps) <= 2 and width <= 48):
            return data, len(steps), stride
        if len(steps) > 8:
            stride *= 2
        else:
            width = max(48, width * 2 // 3)


def _panel(frames: Sequence[np.ndarray], t: int, width: int, image: Any) -> Any:
    ended = t >= len(frames)
    frame = np.asarray(frames[min(t, len(frames) - 1)], dtype=np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    pic = image.fromarray(np.ascontiguousarray(frame[:, :, :3]))
    height = max(1, round(pic.height * width / pic.width))
    pic = pic.resize((width, height), image.Resampling.BILINEAR)
    if ended:
        pic = image.blend(pic, image.new("RGB", pic.size, (255, 255, 255)), 0.55)
    return pic, ended


def _side_by_side(clean: Sequence[np.ndarray], attacked: Sequence[np.ndarray], t: int, width: int,
                  labels: tuple[str, str], image: Any, draw: Any) -> Any:  # fmt: skip
    left, left_ended = _panel(clean, t, width, image)
    right, right_ended = _panel(attacked, t, width, image)
    bar = 14
    canvas = image.new("RGB", (2 * width + 4, max(left.height, right.height) + bar), (255, 255, 255))
    canvas.paste(left, (0, bar))
    canvas.paste(right, (width + 4, bar))
    pen = draw.Draw(canvas)
    for x, label, ended in ((2, labels[0], left_ended), (width + 6, labels[1], right_ended)):
        pen.text((x, 1), f"{label}{' (ended)' if ended else ''}", fill=(20, 20, 20))
    pen.text((2 * width - 40, 1), f"t={t}", fill=(90, 90, 90))
    return canvas


def gif_data_uri(gif: bytes) -> str:
    return "data:image/gif;base64," + base64.b64encode(gif).decode("ascii")


def load_animation(result: PolicyAuditResult, folder: str | Path) -> bytes | None:
    """The GIF ``result.animation.file`` names, read from ``folder`` (the one holding ``result.json``); ``None``
    when there is none or it is missing (the report then says so)."""
    if result.animation is None or result.animation.file is None:
        return None
    name = Path(result.animation.file).name  # never outside the folder
    try:
        return (Path(folder) / name).read_bytes()
    except OSError:
        return None


# -- the pages -------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("modelsec", "report/templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bound"] = lambda v: "unbounded" if v is None else f"{v:.4g}"
    env.filters["pct"] = lambda v, digits=1: "—" if v is None else f"{100.0 * v:.{digits}f}%"
    return env


def _rows(result: PolicyAuditResult) -> list[dict[str, Any]]:
    """The table: per eps, each attack then the worst case."""
    rows: list[dict[str, Any]] = []
    for e in result.eps:
        for r in (r for r in result.results if eps_key(r.eps) == eps_key(e)):
            rows.append({"eps": e, "attack": r.attack, "mean": r.mean_return, "ci": r.ci,
                         "attacked": r.attacked_fraction, "changed": r.changed_fraction,
                         "queries": r.mean_queries, "seconds": r.seconds,
                         "worst": False, "baseline": r.attack == RANDOM_ATTACK})  # fmt: skip
        w = result.worst_at(e)
        if w is not None:
            counts: dict[str, int] = {}
            for a in w.attacks:
                counts[a] = counts.get(a, 0) + 1
            which = ", ".join(f"{a} {n}" for a, n in sorted(counts.items(), key=lambda i: -i[1]))
            rows.append({"eps": e, "attack": "worst case (per episode)", "mean": w.mean_return, "ci": w.ci,
                         "attacked": None, "changed": None, "queries": None, "seconds": None, "worst": True,
                         "baseline": False, "drop": w.relative_drop,
                         "which": which})  # fmt: skip
    return rows


def render_policy_audit_html(result: PolicyAuditResult, *, animation: bytes | None = None) -> str:
    """The audit's page as a string; ``animation``: the GIF of the attacked episode beside the clean one."""
    from modelsec.core.version import __version__

    dims = [
        {"i": i, "std": s, "low": result.scale.low[i], "high": result.scale.high[i]}
        for i, s in enumerate(result.scale.std)
    ]
    card = sorted((k, v) for k, v in result.policy.card.items() if not isinstance(v, (dict, list)))
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            r=result,
            dims=dims,
            rows=_rows(result),
            show_changed=any(r.changed_fraction is not None for r in result.results),
            curves=figure_to_png_data_uri(return_curves(result)),
            strip=figure_to_png_data_uri(worst_case_strip(result)),
            animation=None if animation is None else gif_data_uri(animation),
            card=card,
            settings=sorted(result.settings.items()),
            modelsec_version=__version__,
        )
    )


def write_policy_audit_html(result: PolicyAuditResult, path: str | Path, *, animation: bytes | None = None) -> Path:
    out = Path(path)
    out.write_text(render_policy_audit_html(result, animation=animation), encoding="utf-8")
    return out


def comparison_curves(comparison: PolicyComparison) -> Figure:
    """Worst-case mean return against eps, a line per policy (eps 0: its clean return), with CIs."""
    fig = _new_figure()
    ax = fig.add_subplot()
    _style_axes(ax)
    for i, p in enumerate(comparison.policies):
        keys = [k for k in comparison.eps_keys if k in p.worst_return]
        mean = [p.clean_return, *(p.worst_return[k] for k in keys)]
        low = [p.clean_ci.low, *(p.worst_ci[k].low for k in keys)]
        high = [p.clean_ci.high, *(p.worst_ci[k].high for k in keys)]
        ax.errorbar([0.0, *(float(k) for k in keys)], mean, yerr=_yerr(mean, low, high), label=p.name,
                    color=PALETTE[i % len(PALETTE)], marker="o", markersize=4, linewidth=1.6, capsize=3)  # fmt: skip
    ax.set_xlabel(f"eps ({comparison.norm}, in the baseline's observation standard deviations)", fontsize=10)
    ax.set_ylabel("worst-case mean return", fontsize=10)
    ax.set_title(f"{comparison.env_id}: worst case over attacks (95% bootstrap CIs)", fontsize=11, loc="left")
    ax.legend(fontsize=8.5, frameon=True, framealpha=0.95, edgecolor="#dddddd")
    return fig


def render_policy_comparison_html(comparison: PolicyComparison) -> str:
    from modelsec.core.version import __version__

    return (
        _environment()
        .get_template(COMPARISON_TEMPLATE)
        .render(
            c=comparison,
            curves=figure_to_png_data_uri(comparison_curves(comparison)),
            modelsec_version=__version__,
        )
    )
