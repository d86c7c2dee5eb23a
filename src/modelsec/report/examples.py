"""A grid of adversarial examples for the report: original, adversarial and amplified difference, with labels.

The examples come from the ``adversarial.npz`` that :mod:`modelsec.outputs.audit` writes next to ``result.json``
(:meth:`modelsec.audits.robustness.RobustnessRun.npz_arrays`): arrays ``x``, ``y``, ``pred_clean`` and ``eps``
and, for the ``i``-th epsilon (sorted), the worst-case adversarial inputs ``x_adv_{i}``, the per-sample
``robust_{i}`` (still classified correctly) and the predictions ``pred_adv_{i}``. It is read with
``allow_pickle=False``.

Only image inputs ``(n, C, H, W)`` get a grid: one channel is drawn in greyscale, three as RGB, any other
number as the mean over channels (:func:`modelsec.report.images.to_display`). The figure is a
:class:`matplotlib.figure.Figure` on its own Agg canvas, like :mod:`modelsec.report.plots`: nothing here imports
:mod:`matplotlib.pyplot`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from modelsec.report.images import to_display
from modelsec.report.tables import eps_label

PANEL_INCHES = 1.35  # width of one panel
ROW_INCHES = 1.68  # height of one row: the panel and its two-line title
HEADER_INCHES = 0.35  # the figure's title
GAP = 0.22  # the space between two columns of examples, as a fraction of a panel's width
TWO_COLUMNS_FROM = 4  # from this many examples on, they are laid out in two columns (each still a row of three)
DPI = 150
WRONG_COLOUR = "#cf222e"
RIGHT_COLOUR = "#1f2328"
DIFF_CMAP = "magma"  # |x_adv - x| of a greyscale image: black where unchanged


@dataclass(frozen=True, eq=False)
class ExampleGrid:
    """Clean inputs ``x`` and their adversarial versions ``x_adv`` (both ``(n, C, H, W)``) at ``eps``, with the
    true labels ``y``, the clean predictions ``pred_clean`` and the predictions ``pred_adv`` on ``x_adv``.

    ``bounds`` is the valid input range (drawn as black to white); ``class_names`` names the labels when given.
    ``indices`` are the rows of the source file the examples were taken from, when known.
    """

    x: np.ndarray
    x_adv: np.ndarray
    y: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)
    class_names: Sequence[str] | None = None
    indices: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"x must be (n, C, H, W) images, got shape {self.x.shape}")
        if self.x_adv.shape != self.x.shape:
            raise ValueError(f"x_adv has shape {self.x_adv.shape}, x has {self.x.shape}")
        n = self.x.shape[0]
        for name in ("y", "pred_clean", "pred_adv", *(("indices",) if self.indices is not None else ())):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if len(self.bounds) != 2 or not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {self.bounds}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def label(self, k: int) -> str:
        """Class ``k`` by name when ``class_names`` has one, else its number."""
        if self.class_names is not None and 0 <= k < len(self.class_names):
            return str(self.class_names[k])
        return str(k)

    @classmethod
    def from_npz(
        cls,
        path: str | Path,
        *,
        eps_index: int = -1,
        max_examples: int = 8,
        bounds: tuple[float, float] = (0.0, 1.0),
        class_names: Sequence[str] | None = None,
    ) -> ExampleGrid | None:
        """Up to ``max_examples`` examples at the ``eps_index``-th epsilon (default: the largest) of an
        ``adversarial.npz``.

        Samples that were classified correctly and that an attack broke at that epsilon come first, in index
        order; when there are fewer than ``max_examples`` of them the rest are filled with the other samples,
        in index order. ``None`` when the file does not exist, holds no epsilon, or its inputs are not images
        (``x.ndim != 4``). A file that lacks one of the arrays, or an ``eps_index`` out of range, is a
        ``ValueError``.
        """
        if max_examples < 1:
            raise ValueError(f"max_examples must be at least 1, got {max_examples}")
        p = Path(path)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as npz:
                x = np.asarray(npz["x"])
                eps = np.asarray(npz["eps"], dtype=np.float64).reshape(-1)
                if x.ndim != 4 or eps.size == 0 or x.shape[0] == 0:
                    return None
                try:
                    i = range(eps.size)[eps_index]
                except IndexError:
                    raise ValueError(f"{p}: eps_index {eps_index} is out of range for {eps.size} epsilons") from None
                y = np.asarray(npz["y"]).astype(np.int64).reshape(-1)
                pred_clean = np.asarray(npz["pred_clean"]).astype(np.int64).reshape(-1)
                pred_adv = np.asarray(npz[f"pred_adv_{i}"]).astype(np.int64).reshape(-1)
                robust_key = f"robust_{i}"
                robust = np.asarray(npz[robust_key]).astype(bool) if robust_key in npz.files else pred_adv == y
                x_adv = np.asarray(npz[f"x_adv_{i}"])
        except KeyError as e:
            raise ValueError(f"{p} is not an adversarial-examples file: {e.args[0]}") from None
        if not (x_adv.shape == x.shape and y.shape == pred_clean.shape == pred_adv.shape == robust.shape == (len(x),)):
            raise ValueError(f"{p}: arrays of inconsistent shapes")
        chosen = select_examples(y, pred_clean, robust, max_examples)
        return cls(
            x=x[chosen].astype(np.float64),
            x_adv=x_adv[chosen].astype(np.float64),
            y=y[chosen],
            pred_clean=pred_clean[chosen],
            pred_adv=pred_adv[chosen],
            eps=float(eps[i]),
            bounds=(float(bounds[0]), float(bounds[1])),
            class_names=None if class_names is None else tuple(str(c) for c in class_names),
            indices=chosen,
        )


def select_examples(y: np.ndarray, pred_clean: np.ndarray, robust: np.ndarray, max_examples: int) -> np.ndarray:
    """Indices of up to ``max_examples`` samples: first those classified correctly and broken (not ``robust``),
    in index order, then the others in index order.

    >>> select_examples(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), np.array([True, False, False, False]), 3)
    array([1, 3, 0])
    """
    broken = (pred_clean == y) & ~robust
    first = np.flatnonzero(broken)
    rest = np.flatnonzero(~broken)
    return np.concatenate([first, rest])[:max_examples].astype(np.int64)


def _show(ax: Axes, img: np.ndarray, *, cmap: str = "gray", vmax: float = 1.0) -> None:
    if img.ndim == 3:
        ax.imshow(img, interpolation="nearest")
    else:
        ax.imshow(img, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#d1d9e0")
        spine.set_linewidth(0.6)


def example_grid_figure(grid: ExampleGrid) -> Figure:
    """One row per example, three panels: the original (title: true label / clean prediction), the adversarial
    example (title: its prediction, red when it is wrong) and ``|x_adv - x|`` amplified to the panel's maximum
    (title: that maximum, the L∞ size of the perturbation, and the amplification factor).

    From :data:`TWO_COLUMNS_FROM` examples on, the rows are laid out in two columns, left to right then top to
    bottom, so that the figure fits a page. ``fig.axes[3 * k : 3 * k + 3]`` are the panels of example ``k``.
    """
    n = len(grid)
    cols = 2 if n >= TWO_COLUMNS_FROM else 1
    rows = max(-(-n // cols), 1)
    fig = Figure(
        figsize=((3 * cols + GAP * (cols - 1)) * PANEL_INCHES, rows * ROW_INCHES + HEADER_INCHES),
        dpi=DPI,
        layout=ConstrainedLayoutEngine(w_pad=0.02, h_pad=0.02, wspace=0.04, hspace=0.04),
    )
    FigureCanvasAgg(fig)
    fig.suptitle(f"Adversarial examples at ε = {eps_label(grid.eps)}", fontsize=9.5, x=0.02, ha="left")
    if n == 0:
        return fig
    # Three panel columns per example column, a narrow empty column between example columns.
    ratios = [1.0, 1.0, 1.0]
    for _ in range(cols - 1):
        ratios += [GAP, 1.0, 1.0, 1.0]
    gs = fig.add_gridspec(rows, len(ratios), width_ratios=ratios)
    low, high = grid.bounds
    for r in range(n):
        row, col = divmod(r, cols)
        first = 4 * col
        ax_orig, ax_adv, ax_diff = (fig.add_subplot(gs[row, first + k]) for k in range(3))
        y, clean, adv = int(grid.y[r]), int(grid.pred_clean[r]), int(grid.pred_adv[r])

        _show(ax_orig, to_display(grid.x[r], low, high))
        ax_orig.set_title(
            f"true: {grid.label(y)}\nclean: {grid.label(clean)}",
            fontsize=7.5,
            color=RIGHT_COLOUR if clean == y else WRONG_COLOUR,
        )
        if grid.indices is not None:
            ax_orig.set_ylabel(f"#{int(grid.indices[r])}", fontsize=7, color="#59636e")

        _show(ax_adv, to_display(grid.x_adv[r], low, high))
        ax_adv.set_title(
            f"adversarial\npred: {grid.label(adv)}",
            fontsize=7.5,
            color=RIGHT_COLOUR if adv == y else WRONG_COLOUR,
            fontweight="normal" if adv == y else "bold",
        )

        delta = np.abs(grid.x_adv[r] - grid.x[r])
        peak = float(delta.max()) if delta.size else 0.0
        if peak > 0:
            diff = to_display(delta, 0.0, peak)  # each panel amplified to its own maximum
            title = f"|δ| max {peak:.3g}\n(×{(high - low) / peak:.3g})"
        else:
            diff = to_display(delta, 0.0, 1.0)
            title = "|δ| = 0\n(unchanged)"
        _show(ax_diff, diff, cmap=DIFF_CMAP)
        ax_diff.set_title(title, fontsize=7.5, color=RIGHT_COLOUR)
    return fig
