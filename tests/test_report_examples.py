"""The adversarial-examples grid: reading adversarial.npz, choosing examples, drawing them, and the HTML report."""

from __future__ import annotations

import base64
import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import AxesImage

from modelsec.report import render_html, write_html
from modelsec.report.examples import ExampleGrid, example_grid_figure, select_examples
from modelsec.report.plots import figure_to_png_data_uri
from modelsec.results.audit import AuditResult
from tests.report_fixtures import (
    CLASS_NAMES,
    NPZ_BROKEN,
    NPZ_EPS,
    NPZ_MISCLASSIFIED,
    make_audit_result,
    write_adversarial_npz,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return write_adversarial_npz(tmp_path / "adversarial.npz")


def _png(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix) :], validate=True)


def _grid_src(html: str) -> str | None:
    marker = 'id="examples-grid" src="'
    if marker not in html:
        return None
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


# -- reading and choosing --------------------------------------------------------------------


def test_from_npz_picks_broken_samples_at_the_largest_eps(npz: Path) -> None:
    grid = ExampleGrid.from_npz(npz, max_examples=4)
    assert grid is not None
    assert grid.eps == NPZ_EPS[-1]
    assert list(grid.indices) == list(NPZ_BROKEN[-1][:4])  # type: ignore[arg-type]
    assert grid.x.shape == grid.x_adv.shape == (4, 1, 28, 28)
    assert np.all(grid.pred_clean == grid.y) and np.all(grid.pred_adv != grid.y)
    with np.load(npz) as f:
        chosen = list(NPZ_BROKEN[-1][:4])
        np.testing.assert_allclose(grid.x, f["x"][chosen])
        np.testing.assert_allclose(grid.x_adv, f["x_adv_1"][chosen])
        np.testing.assert_array_equal(grid.y, f["y"][chosen])


def test_from_npz_eps_index(npz: Path) -> None:
    grid = ExampleGrid.from_npz(npz, eps_index=0)
    assert grid is not None and grid.eps == NPZ_EPS[0]
    # Two broken samples first, then the others in index order (the misclassified sample 2 among them).
    assert list(grid.indices) == [*NPZ_BROKEN[0], 0, 1, 2, 3, 4, 6]  # type: ignore[arg-type]
    assert len(grid) == 8
    with pytest.raises(ValueError, match="eps_index"):
        ExampleGrid.from_npz(npz, eps_index=2)


def test_from_npz_falls_back_to_any_samples(tmp_path: Path) -> None:
    path = write_adversarial_npz(tmp_path / "a.npz", n=3)  # nothing broken among samples 0..2 at eps[0]
    grid = ExampleGrid.from_npz(path, eps_index=0)
    assert grid is not None and list(grid.indices) == [0, 1, 2]  # type: ignore[arg-type]
    assert grid.pred_clean[NPZ_MISCLASSIFIED] != grid.y[NPZ_MISCLASSIFIED]


def test_select_examples_order() -> None:
    y = np.array([0, 1, 2, 3, 4])
    pred_clean = np.array([0, 1, 0, 3, 4])  # sample 2 misclassified: not "broken by the attack"
    robust = np.array([True, False, False, False, True])
    assert list(select_examples(y, pred_clean, robust, 2)) == [1, 3]
    assert list(select_examples(y, pred_clean, robust, 10)) == [1, 3, 0, 2, 4]


def test_from_npz_returns_none_for_flat_inputs_and_missing_files(tmp_path: Path) -> None:
    flat = write_adversarial_npz(tmp_path / "flat.npz", flat=True)
    assert ExampleGrid.from_npz(flat) is None
    assert ExampleGrid.from_npz(tmp_path / "nowhere.npz") is None


def test_from_npz_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 1, 4, 4)), eps=np.array([0.1]))
    with pytest.raises(ValueError, match="not an adversarial-examples file"):
        ExampleGrid.from_npz(bad)
    with pytest.raises(ValueError, match="max_examples"):
        ExampleGrid.from_npz(bad, max_examples=0)


def test_from_npz_keeps_class_names_and_bounds(npz: Path) -> None:
    grid = ExampleGrid.from_npz(npz, bounds=(-1.0, 1.0), class_names=CLASS_NAMES)
    assert grid is not None
    assert grid.bounds == (-1.0, 1.0)
    assert grid.label(9) == "Ankle boot" and grid.label(12) == "12"


# -- the figure ------------------------------------------------------------------------------


def test_figure_has_three_panels_per_example(npz: Path) -> None:
    grid = ExampleGrid.from_npz(npz, max_examples=3, class_names=CLASS_NAMES)
    assert grid is not None
    fig = example_grid_figure(grid)
    assert len(fig.axes) == 9
    first = fig.axes[:3]
    y, adv = int(grid.y[0]), int(grid.pred_adv[0])
    assert first[0].get_title() == f"true: {CLASS_NAMES[y]}\nclean: {CLASS_NAMES[y]}"
    assert first[1].get_title() == f"adversarial\npred: {CLASS_NAMES[adv]}"
    assert first[1].title.get_color() == "#cf222e"  # a wrong prediction is red
    assert first[0].title.get_color() != "#cf222e"
    assert first[2].get_title().startswith("|δ| max 0.1")  # eps = 0.1 in L-inf
    images = [ax.get_images()[0] for ax in first]
    assert all(isinstance(im, AxesImage) for im in images)
    assert images[0].get_array().shape == (28, 28) and images[0].get_cmap().name == "gray"  # type: ignore[union-attr]
    diff = np.asarray(images[2].get_array())
    assert diff.max() == pytest.approx(1.0)  # amplified to the panel's maximum
    assert _png(figure_to_png_data_uri(fig)).startswith(PNG_MAGIC)


def test_figure_rgb_and_unchanged_samples(tmp_path: Path) -> None:
    grid = ExampleGrid.from_npz(write_adversarial_npz(tmp_path / "rgb.npz", channels=3), max_examples=2)
    assert grid is not None
    fig = example_grid_figure(grid)
    assert fig.axes[0].get_images()[0].get_array().shape == (28, 28, 3)  # type: ignore[union-attr]
    same = dataclasses.replace(grid, x_adv=grid.x.copy(), pred_adv=grid.y.copy())
    fig = example_grid_figure(same)
    assert fig.axes[2].get_title().startswith("|δ| = 0")
    assert fig.axes[1].title.get_color() != "#cf222e"


def test_grid_validates_shapes(npz: Path) -> None:
    grid = ExampleGrid.from_npz(npz)
    assert grid is not None
    with pytest.raises(ValueError, match="x_adv"):
        dataclasses.replace(grid, x_adv=grid.x_adv[:1])
    with pytest.raises(ValueError, match="bounds"):
        dataclasses.replace(grid, bounds=(1.0, 0.0))


# -- the report ------------------------------------------------------------------------------


def test_write_html_finds_the_npz_next_to_the_page(tmp_path: Path) -> None:
    result = make_audit_result()
    assert result.robustness is not None and result.robustness.adversarial_file == "adversarial.npz"
    write_adversarial_npz(tmp_path / "adversarial.npz")
    html = write_html(result, tmp_path / "report.html").read_text(encoding="utf-8")
    src = _grid_src(html)
    assert src is not None and _png(src).startswith(PNG_MAGIC)
    assert "<h3>Adversarial examples</h3>" in html and "at ε = 0.1" in html
    # The grid belongs to the robustness section, after the curve.
    assert html.index('id="robustness-plot"') < html.index('id="examples-grid"') < html.index('id="privacy"')


def test_render_html_with_explicit_examples(npz: Path, tmp_path: Path) -> None:
    result = make_audit_result()
    grid = ExampleGrid.from_npz(npz, eps_index=0, max_examples=2)
    html = render_html(result, examples=grid)
    assert _grid_src(html) is not None and "2 worst-case adversarial examples at ε = 0.03" in html
    assert _grid_src(render_html(result)) is None
    # write_html uses the examples it is given, not the (absent) file.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _grid_src(write_html(result, elsewhere / "r.html", examples=grid).read_text(encoding="utf-8"))


def test_no_grid_for_flat_inputs_or_without_robustness(tmp_path: Path) -> None:
    write_adversarial_npz(tmp_path / "adversarial.npz", flat=True)
    result = make_audit_result()
    assert _grid_src(write_html(result, tmp_path / "r.html").read_text(encoding="utf-8")) is None
    no_rob = dataclasses.replace(result, robustness=None)
    grid = ExampleGrid.from_npz(write_adversarial_npz(tmp_path / "img.npz"))
    assert _grid_src(render_html(no_rob, examples=grid)) is None


def test_unreadable_npz_is_left_out_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "adversarial.npz").write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="modelsec.report.html"):
        page = write_html(make_audit_result(), tmp_path / "report.html")
    assert _grid_src(page.read_text(encoding="utf-8")) is None
    assert "left out of the report" in caplog.text


def test_html_grid_survives_json_round_trip(tmp_path: Path) -> None:
    write_adversarial_npz(tmp_path / "adversarial.npz")
    result = make_audit_result()
    result.save(tmp_path / "result.json")
    first = write_html(result, tmp_path / "a.html").read_text(encoding="utf-8")
    again = write_html(AuditResult.load(tmp_path / "result.json"), tmp_path / "b.html").read_text(encoding="utf-8")
    assert first == again and _grid_src(first) is not None


def test_grid_rendering_does_not_touch_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, '.')\n"
        "from pathlib import Path\n"
        "from tests.report_fixtures import make_audit_result, write_adversarial_npz\n"
        "from modelsec.report import write_html\n"
        f"folder = Path({str(tmp_path)!r})\n"
        "write_adversarial_npz(folder / 'adversarial.npz')\n"
        "assert 'examples-grid' in write_html(make_audit_result(), folder / 'r.html').read_text()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
