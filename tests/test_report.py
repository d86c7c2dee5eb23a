"""The HTML and Markdown reports and their plots, on a realistic result (no model is run)."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from modelsec.report import render_html, render_markdown, write_html
from modelsec.report.plots import figure_to_png_data_uri, membership_roc, robustness_curve
from modelsec.report.tables import duration, eps_label, pct
from modelsec.results.audit import AuditResult, MinNormStats, SanityFlag, SkippedAttack, Verdict
from tests.report_fixtures import make_audit_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script>'


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def _img(html: str, img_id: str) -> dict[str, str | None] | None:
    for tag, attrs in _tags(html):
        if tag == "img" and attrs.get("id") == img_id:
            return attrs
    return None


def _png_bytes(data_uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert data_uri.startswith(prefix)
    return base64.b64decode(data_uri[len(prefix) :], validate=True)


@pytest.fixture(scope="module")
def result() -> AuditResult:
    return make_audit_result()


@pytest.fixture(scope="module")
def html(result: AuditResult) -> str:
    return render_html(result)


# -- HTML ------------------------------------------------------------------------------------


def test_html_is_self_contained(html: str) -> None:
    lowered = html.lower()
    assert lowered.startswith("<!doctype html>")
    assert 'src="http' not in lowered
    assert "<link" not in lowered
    assert "<script" not in lowered  # no JavaScript at all, inline or external
    assert "@import" not in lowered and "url(" not in lowered
    for tag, attrs in _tags(html):
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:60])


def test_html_embeds_both_plots_as_png(html: str) -> None:
    for img_id in ("robustness-plot", "roc-plot"):
        img = _img(html, img_id)
        assert img is not None, img_id
        assert img.get("alt")
        assert _png_bytes(img["src"] or "").startswith(PNG_MAGIC)


def test_html_shows_verdict_first(result: AuditResult, html: str) -> None:
    assert result.verdict.headline in html
    for detail in result.verdict.details:
        assert detail.replace("'", "&#39;") in html
    assert 'class="verdict verdict-warning"' in html
    assert html.index('id="verdict"') < html.index('id="robustness"') < html.index('id="privacy"')
    assert result.run_id in html
    assert "fashion_cnn.safetensors" in html.split("</h1>")[0]


def test_html_tables_show_rates_with_cis(html: str) -> None:
    # Clean accuracy 912/1000 and its Clopper-Pearson interval; FGSM, PGD and the worst case per eps.
    assert "91.2%" in html and "89.3–92.9%" in html
    for value, ci in [
        ("48.3%", "45.2–51.4%"),
        ("6.2%", "4.8–7.9%"),
        ("35.1%", "32.1–38.1%"),
        ("0.4%", "0.1–1.0%"),
        ("34.2%", "31.3–37.2%"),
        ("0.2%", "0.0–0.7%"),
    ]:
        assert f'{value}<span class="ci">{ci}</span>' in html
    assert "Worst case (per sample)" in html
    assert "ε = 0.03" in html and "ε = 0.1" in html
    # Membership: AUC with CI, TPR at 0.1% and 1% FPR, advantage, sample sizes.
    assert "0.611" in html and "0.600–0.622" in html
    assert "TPR @ 0.1% FPR" in html and "TPR @ 1% FPR" in html
    assert "2.7%" in html and "15.9%" in html and "5,000" in html


def test_html_shows_checks_flags_model_data_and_run(result: AuditResult, html: str) -> None:
    rob = result.robustness
    assert rob is not None
    for check in rob.checks:
        assert check in html
    assert html.count('class="badge badge-passed"') == len(rob.checks) - 2
    assert html.count('class="badge badge-warning"') == 2
    for flag in rob.flags:
        assert flag.message in html
    assert result.model.sha256 is not None and result.model.sha256 in html
    for h in result.data.sha256.values():
        assert h in html
    assert "members/nonmembers" in html and "0 shared records" in html
    assert "small-cnn" in html and "safetensors" in html and "421,642" in html
    assert "2.6.0" in html and "44.5 s" in html  # versions and timings
    assert "loss-threshold attack needs no reference models" in html  # privacy notes


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end, html.index(start))]


def test_html_flags_show_remedy_and_resolution(result: AuditResult, html: str) -> None:
    rob = result.robustness
    assert rob is not None
    resolved, unresolved = rob.flags
    checks = _section(html, "<h3>Sanity checks</h3>", "</ul>")
    assert checks.count('class="badge badge-resolved"') == 1
    assert checks.count('class="badge badge-unresolved"') == 1
    assert checks.count("robustness likely overestimated") == 1
    assert f"Remedy: {resolved.remedy}" in checks and f"Remedy: {unresolved.remedy}" in checks
    # Each badge follows its own flag's message; the sentence follows the unresolved badge.
    for flag, badge in [(resolved, 'badge-resolved"'), (unresolved, 'badge-unresolved"')]:
        item = _section(checks, f"<code>{flag.check}</code>", "</li>")
        assert item.index(flag.message) < item.index(badge) < item.index(f"Remedy: {flag.remedy}")
    item = _section(checks, f"<code>{unresolved.check}</code>", "</li>")
    assert item.index('badge-unresolved"') < item.index("robustness likely overestimated")
    assert '2 flags fired</span>, <span class="bad">1 unresolved' in html


def test_html_flag_without_remedy(result: AuditResult) -> None:
    assert result.robustness is not None
    flag = SanityFlag("zero-gradients", "all gradients are zero", severity="error")
    html = render_html(dataclasses.replace(result, robustness=dataclasses.replace(result.robustness, flags=[flag])))
    assert "No remedy was applied." in html and 'class="badge badge-unresolved"' in html
    assert 'class="badge badge-error"' in html and "robustness likely overestimated" in html


def test_batch_dependence_flag_says_the_numbers_are_not_trustworthy(result: AuditResult) -> None:
    """An unresolved batch-dependence flag: the HTML and Markdown say "not trustworthy", not "overestimated"."""
    assert result.robustness is not None
    flag = SanityFlag("batch-dependence", "logits differ by up to 3.2 alone", severity="error")
    rob = dataclasses.replace(result.robustness, flags=[flag])
    html = render_html(dataclasses.replace(result, robustness=rob))
    item = _section(_section(html, "<h3>Sanity checks</h3>", "</ul>"), "<code>batch-dependence</code>", "</li>")
    assert item.index('badge-unresolved"') < item.index("robustness numbers not trustworthy")
    assert "overestimated" not in item and "No remedy was applied." in item
    md = render_markdown(dataclasses.replace(result, robustness=rob))
    assert "- ❌ **unresolved: robustness numbers not trustworthy** — No remedy was applied." in md
    assert "overestimated** —" not in md


def test_prediction_rule_is_shown(result: AuditResult) -> None:
    assert result.robustness is not None
    rule = "majority vote over 10 forward passes (ties: the highest mean probability)"
    voted = dataclasses.replace(result, robustness=dataclasses.replace(result.robustness, prediction=rule))
    assert f"· Each prediction, clean and adversarial: {rule}</span>" in render_html(voted)
    assert f"**Each prediction, clean and adversarial:** {rule}" in render_markdown(voted)
    assert "Each prediction, clean and adversarial: argmax of one forward pass" in render_html(result)


def test_html_all_flags_resolved(result: AuditResult) -> None:
    assert result.robustness is not None
    flags = [dataclasses.replace(f, resolved=True) for f in result.robustness.flags]
    html = render_html(dataclasses.replace(result, robustness=dataclasses.replace(result.robustness, flags=flags)))
    checks = _section(html, "<h3>Sanity checks</h3>", "</ul>")
    assert checks.count('class="badge badge-resolved"') == 2
    assert 'class="badge badge-unresolved"' not in html and "overestimated" not in checks
    assert "unresolved" not in _section(html, "Sanity checks</div>", "</div></div>")


def test_html_preset_skipped_and_min_norm(html: str) -> None:
    assert '<span class="preset" id="attack-preset">quick</span>' in html
    assert html.index('id="attack-preset"') < html.index('id="robustness-table"')
    assert "1 skipped" in html
    skipped = _section(html, 'id="skipped-attacks"', "</ul>")
    assert "<li><code>square</code>: needs class scores; the model only returns labels</li>" in skipped
    table = _section(html, 'id="min-norm-table"', "</table>")
    for header in ("Found", "Median", "Mean", "10%", "25%", "75%", "90%"):
        assert f">{header}</th>" in table
    assert "<td>deepfool</td><td>L∞</td>" in table
    assert '897 / 912<span class="ci">98.4%</span>' in table
    for value in ("0.0213", "0.0248", "0.0071", "0.0132", "0.0331", "0.0472"):
        assert f'<td class="num">{value}</td>' in table
    assert html.index('id="robustness-table"') < html.index('id="skipped-attacks"') < html.index('id="min-norm-table"')
    assert "<th>Class names</th><td>T-shirt/top, Trouser," in html


def test_html_new_sections_absent_when_empty(result: AuditResult) -> None:
    assert result.robustness is not None
    rob = dataclasses.replace(result.robustness, preset=None, skipped=[], min_norm=[])
    data = dataclasses.replace(result.data, class_names=None)
    html = render_html(dataclasses.replace(result, robustness=rob, data=data))
    assert 'id="attack-preset"' not in html and "no preset" in html
    assert 'id="skipped-attacks"' not in html and "Skipped attacks" not in html and " skipped (" not in html
    assert 'id="min-norm-table"' not in html and "Minimal perturbations" not in html
    assert "Class names" not in html
    assert 'id="examples-grid"' not in html


def test_html_min_norm_nothing_found(result: AuditResult) -> None:
    assert result.robustness is not None
    stats = MinNormStats("cw", "l2", n=10, found=0, median=None, mean=None, quantiles={})  # type: ignore[arg-type]
    rob = dataclasses.replace(result.robustness, min_norm=[stats])
    html = render_html(dataclasses.replace(result, robustness=rob))
    table = _section(html, 'id="min-norm-table"', "</table>")
    assert '0 / 10<span class="ci">0.0%</span>' in table and table.count('<td class="num">—</td>') == 6
    md = render_markdown(dataclasses.replace(result, robustness=rob))
    assert "| cw | L2 | 0 / 10 (0.0%) | — | — | — | — | — | — |" in md


def test_html_escapes_new_fields(result: AuditResult) -> None:
    assert result.robustness is not None
    rob = dataclasses.replace(
        result.robustness,
        preset=EVIL,
        skipped=[SkippedAttack(EVIL, EVIL)],
        min_norm=[dataclasses.replace(result.robustness.min_norm[0], attack=EVIL)],
        flags=[SanityFlag("x", EVIL, remedy=EVIL, resolved=False)],
    )
    data = dataclasses.replace(result.data, class_names=[EVIL, "b"])
    html = render_html(dataclasses.replace(result, robustness=rob, data=data))
    assert "<script" not in html.lower()
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") >= 7
    md = render_markdown(dataclasses.replace(result, robustness=rob, data=data))
    assert "<script>" not in re.sub(r"`[^`]*`", "", md)


def test_html_escapes_user_strings() -> None:
    base = make_audit_result()
    result = make_audit_result(
        model=dataclasses.replace(base.model, path=f"models/{EVIL}.pt", arch=EVIL),
        verdict=Verdict(level="fail", headline=f"bad {EVIL}", details=[EVIL]),
        settings={"note": EVIL},
    )
    html = render_html(result)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert 'class="verdict verdict-fail"' in html


def test_unknown_verdict_level_gets_neutral_style() -> None:
    result = make_audit_result(verdict=Verdict(level='x" onload="y', headline="h"))
    html = render_html(result)
    assert 'class="verdict verdict-unknown"' in html
    assert 'onload="y' not in html


def test_html_without_robustness(result: AuditResult) -> None:
    html = render_html(dataclasses.replace(result, robustness=None))
    assert _img(html, "robustness-plot") is None
    assert "Robustness was not audited" in html
    assert _img(html, "roc-plot") is not None


def test_html_without_privacy(result: AuditResult) -> None:
    html = render_html(dataclasses.replace(result, privacy=None))
    assert _img(html, "roc-plot") is None
    assert "Membership inference was not audited" in html
    assert _img(html, "robustness-plot") is not None


def test_html_with_neither_section(result: AuditResult) -> None:
    html = render_html(dataclasses.replace(result, robustness=None, privacy=None))
    assert "Robustness was not audited" in html and "Membership inference was not audited" in html
    assert result.verdict.headline in html


def test_html_is_deterministic_and_survives_json_round_trip(result: AuditResult, html: str) -> None:
    assert render_html(AuditResult.from_dict(result.to_dict())) == html


def test_write_html(result: AuditResult, tmp_path: Path) -> None:
    out = write_html(result, tmp_path / "report.html")
    assert out == tmp_path / "report.html"
    text = out.read_text(encoding="utf-8")
    assert 'id="roc-plot"' in text and 'charset="utf-8"' in text
    # result.adversarial_file names adversarial.npz, which is not in tmp_path: no grid, no error.
    assert 'id="examples-grid"' not in text
    assert "<code>adversarial.npz</code>" in text


def test_rendering_does_not_touch_pyplot() -> None:
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from report_fixtures import make_audit_result\n"
        "from modelsec.report import render_html\n"
        "render_html(make_audit_result())\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


# -- Markdown --------------------------------------------------------------------------------


def test_markdown_has_verdict_and_tables(result: AuditResult) -> None:
    md = render_markdown(result)
    assert md.startswith("# modelsec audit: fashion_cnn.safetensors\n")
    assert "> ⚠️ **WARNING: Not robust at ε = 0.03" in md
    assert "| Attack | Norm | ε = 0.03 | ε = 0.1 |" in md
    assert "| fgsm | L∞ | 48.3% (45.2–51.4%) | 6.2% (4.8–7.9%) |" in md
    assert "| pgd | L∞ | 35.1% (32.1–38.1%) | 0.4% (0.1–1.0%) |" in md
    assert "| **Worst case (per sample)** | L∞ | **34.2% (31.3–37.2%)** | **0.2% (0.0–0.7%)** |" in md
    assert (
        "| loss-threshold | 0.611 (0.600–0.622) | 0.4% (0.2–0.6%) | 2.7% (2.3–3.2%) | 18.9% (17.8–20.0%) | 57.9% "
        "| 15.9% | 0.64 (at 1% FNR) | 0.1 s |"
    ) in md
    assert "**Clean accuracy:** 91.2% (89.3–92.9%) on 1,000 samples" in md
    assert "`more-iterations`: warning" in md
    assert "data:image" not in md  # no plots


def test_markdown_new_sections(result: AuditResult) -> None:
    md = render_markdown(result)
    assert "**Attack preset:** `quick` · 1 skipped" in md
    assert "**Skipped attacks**\n\n- `square`: needs class scores; the model only returns labels" in md
    assert "| Attack | Norm | Found | Median | Mean | 10% | 25% | 75% | 90% |" in md
    assert "| deepfool | L∞ | 897 / 912 (98.4%) | 0.0213 | 0.0248 | 0.0071 | 0.0132 | 0.0331 | 0.0472 |" in md
    assert (
        "  - PGD with 4x the steps lowered robust accuracy at eps=0.03 from 35.1% to 33.0%: the attack may not "
        "have converged.\n    - ✅ **resolved** — Remedy: Re-ran PGD with 160 steps; the worst case includes it."
    ) in md
    assert (
        "    - ❌ **unresolved: robustness likely overestimated** — Remedy: Ran Square (black-box) on those samples; "
        "it broke 4 of 31."
    ) in md
    assert md.count("robustness likely overestimated** —") == 1


def test_markdown_new_sections_absent_when_empty(result: AuditResult) -> None:
    assert result.robustness is not None
    rob = dataclasses.replace(result.robustness, preset=None, skipped=[], min_norm=[], flags=[])
    md = render_markdown(dataclasses.replace(result, robustness=rob))
    assert "**Attacks:** chosen explicitly (no preset)\n" in md
    assert "Skipped attacks" not in md and "Minimal perturbations" not in md and "skipped" not in md
    robustness = _section(md, "## Adversarial robustness", "## Membership inference")
    assert "resolved" not in robustness and "Remedy" not in robustness


def test_markdown_tables_are_well_formed(result: AuditResult) -> None:
    md = render_markdown(result)
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| :---") or line.startswith("| ---"):
            n_cols = line.count("|")
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].replace("\\|", "").count("|") == n_cols, lines[j]
                j += 1


def test_markdown_escapes_user_strings() -> None:
    base = make_audit_result()
    result = make_audit_result(
        model=dataclasses.replace(base.model, path="a|b/<script>.pt", arch="x|y"),
        verdict=Verdict(level="fail", headline="<b>bold</b> *claim*", details=["line\nbreak"]),
    )
    md = render_markdown(result)
    outside_code = re.sub(r"`[^`]*`", "", md)
    assert "<script>" not in outside_code and "<b>" not in md
    assert "\\<script\\>.pt" in md  # the model name in the title
    assert "\\<b\\>bold\\</b\\> \\*claim\\*" in md
    assert "`a\\|b/<script>.pt`" in md  # inside a code span HTML is inert; | escaped for the table
    assert "line break" in md
    assert "❌ **FAIL" in md


def test_markdown_without_sections(result: AuditResult) -> None:
    md = render_markdown(dataclasses.replace(result, robustness=None, privacy=None))
    assert "Robustness was not audited" in md and "Membership inference was not audited" in md
    assert "| fgsm" not in md


# -- plots -----------------------------------------------------------------------------------


def test_membership_roc_is_log_log(result: AuditResult) -> None:
    assert result.privacy is not None
    fig = membership_roc(result.privacy)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # 5,000 non-members: the FPR axis starts at 1/5000 (above 1e-4) and ends at 1.
    assert ax.get_xlim() == pytest.approx((1 / 5000, 1.0))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("loss-threshold" in s and "AUC 0.611" in s and "TPR@0.1% FPR 0.4%" in s for s in labels)
    assert "chance" in labels
    for line in ax.get_lines():  # zeros were clipped: everything is drawable on log axes
        assert np.all(np.asarray(line.get_xdata(), dtype=float) > 0)
        assert np.all(np.asarray(line.get_ydata(), dtype=float) > 0)
    assert _png_bytes(figure_to_png_data_uri(fig)).startswith(PNG_MAGIC)


def test_membership_roc_floor_is_1e4_for_large_populations(result: AuditResult) -> None:
    assert result.privacy is not None
    attack = dataclasses.replace(result.privacy.attacks[0], n_nonmembers=1_000_000)
    fig = membership_roc(dataclasses.replace(result.privacy, attacks=[attack]))
    assert fig.axes[0].get_xlim()[0] == pytest.approx(1e-4)


def test_robustness_curve(result: AuditResult) -> None:
    assert result.robustness is not None
    fig = robustness_curve(result.robustness)
    (ax,) = fig.axes
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_xlabel().startswith("perturbation budget") and ax.get_ylabel() == "robust accuracy"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["fgsm", "pgd", "worst case (per sample)"]
    assert "clean accuracy (91.2%)" in labels
    # errorbar() labels its container; the container's first line is the data line.
    lines = {c.get_label(): c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)}
    worst = lines["worst case (per sample)"]
    assert worst.get_linewidth() > lines["fgsm"].get_linewidth()
    # Every line starts at the clean accuracy at eps = 0.
    assert list(worst.get_xdata()) == [0.0, 0.03, 0.1]
    assert list(worst.get_ydata()) == pytest.approx([0.912, 0.342, 0.002])
    assert np.asarray(lines["pgd"].get_ydata())[0] == pytest.approx(0.912)


def test_figure_to_png_data_uri_closes_figure(result: AuditResult) -> None:
    assert result.robustness is not None
    fig = robustness_curve(result.robustness)
    uri = figure_to_png_data_uri(fig)
    assert _png_bytes(uri).startswith(PNG_MAGIC)
    assert fig.axes == []


# -- formatting ------------------------------------------------------------------------------


def test_formatting() -> None:
    assert pct(0.8734) == "87.3%" and pct(1.0) == "100.0%" and pct(None) == "—"
    assert pct(float("nan")) == "—"
    assert eps_label(0.03) == "0.03" and eps_label(8 / 255) == "8/255"
    assert duration(4.2) == "4.2 s" and duration(125) == "2 min 5 s" and duration(7300) == "2 h 1 min"


def test_empty_sections_render(result: AuditResult) -> None:
    assert result.robustness is not None and result.privacy is not None
    rob = dataclasses.replace(result.robustness, results=[], robust_accuracy={}, robust_ci={}, flags=[], checks=[])
    priv = dataclasses.replace(result.privacy, attacks=[], notes=[])
    empty = dataclasses.replace(result, robustness=rob, privacy=priv)
    html = render_html(empty)
    assert "No attack results were recorded" in html and "No sanity checks were run" in html
    assert "No membership attacks were recorded" in html and _img(html, "roc-plot") is None
    assert _png_bytes(_img(html, "robustness-plot")["src"] or "").startswith(PNG_MAGIC)  # type: ignore[index]
    md = render_markdown(empty)
    assert "_No attack results were recorded._" in md


def test_roc_with_zero_rates_stays_on_log_axes(result: AuditResult) -> None:
    assert result.privacy is not None
    attack = dataclasses.replace(result.privacy.attacks[0], roc_fpr=[0.0, 0.0, 0.5, 1.0], roc_tpr=[0.0, 0.0, 0.0, 1.0])
    fig = membership_roc(dataclasses.replace(result.privacy, attacks=[attack]))
    for line in fig.axes[0].get_lines():
        assert np.all(np.asarray(line.get_xdata(), dtype=float) > 0)
        assert np.all(np.asarray(line.get_ydata(), dtype=float) > 0)


# -- membership: metrics, epsilon, exposed members, compute ----------------------------------------


def _exposed_images(result: AuditResult) -> np.ndarray:
    """One image (1, 28, 28) per exposed record, each a uniform grey of its rank."""
    assert result.privacy is not None
    ranks = np.array([r.rank for r in result.privacy.exposed_records], dtype=np.float32)
    return np.broadcast_to(ranks[:, None, None, None] / 10, (ranks.size, 1, 28, 28)).copy()


def test_privacy_table_has_every_metric(html: str) -> None:
    table = _section(html, 'id="privacy-table"', "</table>")
    for header in ("TPR @ 0.1% FPR", "TPR @ 1% FPR", "TPR @ 10% FPR", "Balanced acc.", "Advantage", "ε lower bound"):
        assert f">{header}</th>" in table
    assert "<td>loss-threshold</td>" in table and "<td>lira</td>" in table
    assert '18.9%<span class="ci">17.8–20.0%</span>' in table  # TPR at 10% FPR with its interval
    assert '<td class="num">57.9%</td>' in table and '<td class="num">69.1%</td>' in table  # balanced accuracy
    assert '0.64<span class="ci">at 1% FNR</span>' in table
    assert '1.96<span class="ci">at 0.1% FNR</span>' in table
    assert '<td class="num">5 min 18 s</td>' in table  # LiRA's time
    note = _section(html, 'id="epsilon-note"', "</p>")
    assert "never a guarantee" in note and "95% confidence, simultaneous over 6 thresholds" in note
    assert "Jagielski" in note and "Kairouz" in note
    assert "Each attack scored 5,000 members and 5,000 non-members" in html


def test_compute_line(html: str) -> None:
    line = _section(html, 'id="compute-used"', "</p>")
    assert "reference models <strong>8</strong>" in line
    assert "reference training <strong>5 min 12 s</strong>" in line and "forward passes <strong>90,000</strong>" in line
    assert html.index('id="privacy-table"') < html.index('id="compute-used"') < html.index('id="roc-plot"')


def test_exposed_members_without_images(result: AuditResult, html: str) -> None:
    assert result.privacy is not None
    section = _section(html, 'id="exposed-records"', "</div>\n  <p")
    assert "<code>lira</code>" in section and "<th>Image</th>" not in section and "<img" not in section
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>\s*<td class=\"mono\">(#\d+)</td><td>([^<]*)</td>", section)
    assert rows == [
        (str(r.rank), f"#{r.member_index}", f"{r.label} · {r.class_name}") for r in result.privacy.exposed_records
    ]
    assert '<td class="num">9.82</td>' in section
    assert html.index('id="roc-plot"') < html.index('id="exposed-records"') < html.index('id="model"')


def test_exposed_members_with_thumbnails(result: AuditResult, tmp_path: Path) -> None:
    from matplotlib.image import imread

    assert result.privacy is not None
    html = write_html(result, tmp_path / "r.html", exposed_images=_exposed_images(result)).read_text(encoding="utf-8")
    section = _section(html, 'id="exposed-records"', "</div>\n  <p")
    assert "<th>Image</th>" in section
    thumbs = [attrs for tag, attrs in _tags(section) if tag == "img"]
    assert len(thumbs) == len(result.privacy.exposed_records)
    for attrs, record in zip(thumbs, result.privacy.exposed_records, strict=True):
        assert attrs["alt"] == f"member #{record.member_index}"
        pixels = imread(io.BytesIO(_png_bytes(attrs["src"] or "")), format="png")
        assert pixels.shape[:2] == (56, 56)  # 28 x 28 enlarged twice
        assert pixels[..., 0] == pytest.approx(np.full((56, 56), record.rank / 10), abs=1 / 255)  # its own image
    assert render_html(result, exposed_images=_exposed_images(result)) == html  # deterministic


def test_exposed_images_that_are_not_images_or_too_few(result: AuditResult) -> None:
    flat = _exposed_images(result).reshape(-1, 784)
    html = render_html(result, exposed_images=flat)
    assert 'id="exposed-records"' in html and "<th>Image</th>" not in html
    with pytest.raises(ValueError, match="one input per record"):
        render_html(result, exposed_images=_exposed_images(result)[:3])


def test_privacy_section_of_an_old_result(result: AuditResult) -> None:
    """A result.json written before balanced accuracy, the epsilon bound, exposed records and compute."""
    d = result.to_dict()
    for a in d["privacy"]["attacks"]:
        for key in ("balanced_accuracy", "epsilon_lower_bound", "epsilon_evidence"):
            del a[key]
        del a["tpr_at_fpr"]["0.1"], a["tpr_ci"]["0.1"]
    del d["privacy"]["exposed_records"], d["privacy"]["compute"]
    old = AuditResult.from_dict(d)
    html = render_html(old)
    table = _section(html, 'id="privacy-table"', "</table>")
    assert '<td class="num">57.9%</td>' in table  # balanced accuracy derived from the advantage
    assert table.count('<td class="num">—</td>') == 2 * 2  # TPR at 10% and epsilon, per attack
    assert 'id="exposed-records"' not in html and 'id="compute-used"' not in html
    md = render_markdown(old)
    assert "| 57.9% | 15.9% | — |" in md and "Compute used" not in md


def test_zero_epsilon_bound(result: AuditResult) -> None:
    assert result.privacy is not None
    attack = dataclasses.replace(result.privacy.attacks[0], epsilon_lower_bound=0.0, epsilon_evidence=None)
    priv = dataclasses.replace(result.privacy, attacks=[attack])
    table = _section(render_html(dataclasses.replace(result, privacy=priv)), 'id="privacy-table"', "</table>")
    assert '<td class="num">0</td>' in table
    assert "at 95% confidence (Clopper-Pearson" in render_markdown(dataclasses.replace(result, privacy=priv))


def test_exposed_records_are_escaped(result: AuditResult) -> None:
    assert result.privacy is not None
    records = [dataclasses.replace(r, attack=EVIL, class_name=EVIL) for r in result.privacy.exposed_records]
    priv = dataclasses.replace(result.privacy, exposed_records=records, compute={EVIL: EVIL})
    html = render_html(dataclasses.replace(result, privacy=priv), exposed_images=_exposed_images(result))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in _section(html, 'id="exposed-records"', "</div>\n  <p")
    md = render_markdown(dataclasses.replace(result, privacy=priv))
    assert "<script>" not in re.sub(r"`[^`]*`", "", md)


def test_markdown_epsilon_and_compute(result: AuditResult) -> None:
    md = render_markdown(result)
    assert "| lira | 0.760 (0.751–0.769) |" in md and "| 1.96 (at 0.1% FNR) | 5 min 18 s |" in md
    assert "**ε lower bound:**" in md and "never a guarantee" in md
    assert "95% confidence, simultaneous over 6 thresholds" in md
    assert "**Compute used:** reference models 8 · reference training 5 min 12 s · forward passes 90,000" in md
    assert "Each attack scored 5,000 members and 5,000 non-members." in md


def test_roc_shows_every_attack(result: AuditResult) -> None:
    assert result.privacy is not None
    (ax,) = membership_roc(result.privacy).axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [label.split()[0] for label in labels] == ["chance", "loss-threshold", "lira"]


def test_report_fprs_are_the_metric_targets() -> None:
    from modelsec.report.tables import LOW_FPRS
    from modelsec.stats.metrics import FPR_TARGETS

    assert LOW_FPRS == FPR_TARGETS


def test_thumbnails_do_not_touch_pyplot() -> None:
    code = (
        "import sys, numpy as np\n"
        "from modelsec.report.images import thumbnail_data_uri\n"
        "assert thumbnail_data_uri(np.zeros((3, 8, 8)), (0.0, 1.0)).startswith('data:image/png;base64,')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
