"""A self-contained HTML report of an :class:`~modelsec.results.AuditResult`.

The page is one file: inline CSS, plots embedded as base64 PNG ``data:`` URIs, no JavaScript and
nothing fetched from the network, so it can be attached to a ticket or opened offline. Every string
from the result is HTML-escaped by the template engine (``autoescape=True``): a model path or an
attack name cannot inject markup.

With image inputs the robustness section also shows a grid of worst-case adversarial examples
(:mod:`modelsec.report.examples`); :func:`write_html` reads them from the result's ``adversarial_file``
when it lies next to the page. The privacy section lists the most exposed members
(``PrivacyResult.exposed_records``); given their images (``exposed_images``, one per record) it shows each as a
thumbnail. Images are never stored in ``result.json``, so the caller passes them.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from modelsec.report import tables
from modelsec.report.examples import ExampleGrid, example_grid_figure
from modelsec.report.images import is_image_batch, thumbnail_data_uri
from modelsec.report.plots import figure_to_png_data_uri, membership_roc, robustness_curve
from modelsec.results.audit import AuditResult, ExposedRecord

TEMPLATE = "report.html.j2"
EXAMPLES_PX_PER_INCH = 100  # the example grid is drawn at 150 dpi and shown at 2/3 size (sharp on HiDPI)

log = logging.getLogger(__name__)


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


def exposed_thumbnails(
    records: list[ExposedRecord], images: np.ndarray | None, bounds: tuple[float, float]
) -> list[str] | None:
    """A PNG ``data:`` URI per record, from ``images[i]``, the input of ``records[i]`` (``(len(records), C, H, W)``
    in ``bounds``); ``None`` when there are no images or they are not images (e.g. tabular rows). Another number
    of images than records is a ``ValueError``: the caller passed the wrong array."""
    if images is None or not records:
        return None
    x = np.asarray(images)
    if x.shape[0] != len(records):
        raise ValueError(
            f"exposed_images has {x.shape[0]} rows for {len(records)} exposed records: pass one input per record, "
            "in the order of privacy.exposed_records"
        )
    if not is_image_batch(x):
        return None
    return [thumbnail_data_uri(img, bounds) for img in x]


def _context(
    result: AuditResult, examples: ExampleGrid | None = None, exposed_images: np.ndarray | None = None
) -> dict[str, Any]:
    rob, priv = result.robustness, result.privacy
    ctx: dict[str, Any] = {
        "r": result,
        "model_name": tables.model_name(result),
        "level": tables.verdict_level(result.verdict.level),
        "level_label": tables.LEVEL_LABELS.get(result.verdict.level, result.verdict.level.upper() or "UNKNOWN"),
        "fpr_labels": [tables.fpr_label(f) for f in tables.LOW_FPRS],
        "modelsec_version": result.versions.get("modelsec", ""),
        "examples": None,
        "cost_rows": [],
    }
    if rob is not None:
        ctx["rob_table"] = tables.robustness_table(rob)
        ctx["clean"] = tables.Rate.of_interval(rob.clean_accuracy, rob.clean_ci)
        ctx["checks"] = tables.check_rows(rob)
        ctx["n_unresolved"] = tables.unresolved_flags(rob)
        ctx["min_norm_rows"] = tables.min_norm_rows(rob)
        ctx["quantile_labels"] = [tables.quantile_label(q) for q in tables.MIN_NORM_QUANTILES]
        if examples is not None and len(examples) > 0:
            fig = example_grid_figure(examples)
            width = round(fig.get_figwidth() * EXAMPLES_PX_PER_INCH)
            ctx["examples"] = {
                "src": figure_to_png_data_uri(fig),
                "width": width,
                "eps": tables.eps_label(examples.eps),
                "n": len(examples),
            }
        ctx["rob_ci_note"] = tables.ci_note(tables.robustness_intervals(rob))
        ctx["probe_notes"] = tables.probe_notes(rob)
        ctx["rob_plot"] = figure_to_png_data_uri(robustness_curve(rob))
        ctx["cost_rows"] = tables.cost_rows(rob)
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
        ctx["priv_counts"] = tables.privacy_counts(priv)
        ctx["eps_confidence"] = tables.epsilon_confidence(priv)
        bounds = (float(result.data.bounds[0]), float(result.data.bounds[1]))
        thumbnails = exposed_thumbnails(priv.exposed_records, exposed_images, bounds)
        ctx["exposed"] = tables.exposed_groups(priv.exposed_records, thumbnails)
        ctx["has_thumbnails"] = thumbnails is not None
        ctx["compute"] = tables.compute_items(priv.compute)
        ctx["recipe"] = tables.recipe_notice(priv)
        has_roc = any(a.roc_fpr for a in priv.attacks)
        ctx["roc_plot"] = figure_to_png_data_uri(membership_roc(priv)) if has_roc else None
    return ctx


def render_html(
    result: AuditResult, *, examples: ExampleGrid | None = None, exposed_images: np.ndarray | None = None
) -> str:
    """The audit report as one self-contained HTML page (UTF-8 text).

    ``examples``: adversarial examples to draw as a grid in the robustness section (``id="examples-grid"``),
    e.g. from :meth:`ExampleGrid.from_npz`; none by default.
    ``exposed_images``: the inputs of the exposed members, ``exposed_images[i]`` that of
    ``result.privacy.exposed_records[i]`` (``(len(exposed_records), C, H, W)`` in the data's bounds); each is then
    shown as a thumbnail. Without it, or for inputs that are not images, the members are listed without pictures.
    """
    return _environment().get_template(TEMPLATE).render(**_context(result, examples, exposed_images))


def load_examples(result: AuditResult, folder: str | Path) -> ExampleGrid | None:
    """The example grid of ``result``'s ``adversarial_file``, resolved against ``folder``; ``None`` when there is
    no such file, its inputs are not images, or it cannot be read (logged as a warning)."""
    rob = result.robustness
    if rob is None or not rob.adversarial_file:
        return None
    path = Path(folder) / rob.adversarial_file
    bounds = result.data.bounds
    try:
        return ExampleGrid.from_npz(
            path,
            bounds=(float(bounds[0]), float(bounds[1])),
            class_names=result.data.class_names,
        )
    except (OSError, ValueError, IndexError) as e:
        log.warning("adversarial examples in %s left out of the report: %s", path, e)
        return None


def write_html(
    result: AuditResult,
    path: str | Path,
    *,
    examples: ExampleGrid | None = None,
    exposed_images: np.ndarray | None = None,
) -> Path:
    """Write :func:`render_html` of ``result`` to ``path`` (UTF-8) and return the path.

    Without ``examples``, the grid is read from the result's ``adversarial_file`` relative to the page's folder
    (where the audit writes both), if it is there. ``exposed_images``: as for :func:`render_html`.
    """
    out = Path(path)
    if examples is None:
        examples = load_examples(result, out.parent)
    out.write_text(render_html(result, examples=examples, exposed_images=exposed_images), encoding="utf-8")
    return out
