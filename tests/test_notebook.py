"""Results in Jupyter: ``_repr_html_`` of an audit (complete, without privacy, without robustness, with neither), a
comparison and a one-run DP audit, checked for their numbers, escaping and self-containment; ``show()`` writing the
full report and opening it (``webbrowser.open`` monkeypatched); the display hook found in a fresh interpreter; and
``examples/audit.ipynb`` executed cell by cell, its displayed results checked (no Jupyter needed)."""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from markupsafe import escape

import modelsec
from modelsec.audits.recommendation import recommend
from modelsec.report import tables
from modelsec.report.comparison import render_comparison_html
from modelsec.report.dp_audit import render_dp_audit_html
from modelsec.report.html import render_html
from modelsec.results import display
from modelsec.results.audit import OVERESTIMATED, AuditResult, Interval, ModelInfo
from modelsec.results.comparison import COMPARISON_SCHEMA_VERSION, Comparison, ModelSummary
from modelsec.results.dp_audit import DPAuditResult
from tests.report_fixtures import make_audit_result

TESTS = Path(__file__).resolve().parent
NOTEBOOK = TESTS.parent / "examples" / "audit.ipynb"
PNG_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images(html: str) -> list[bytes]:
    """The decoded PNG images of ``html``'s ``<img>`` tags (each checked to be a PNG)."""
    out = [base64.b64decode(m) for m in PNG_URI.findall(html)]
    assert all(png.startswith(PNG_MAGIC) for png in out)
    return out


def assert_self_contained(html: str) -> None:
    """A notebook fragment: one ``<div>``, no script, no ``id`` (outputs repeat on a page), every image inline."""
    assert html.startswith('<div class="modelsec-nb">') and html.rstrip().endswith("</div>")
    assert "<script" not in html.lower() and " id=" not in html
    assert "<html" not in html.lower() and "<body" not in html.lower()
    assert html.count("<img ") == len(images(html))  # every image a PNG data: URI
    assert not re.search(r'(src|href)="(https?:)?//', html)


# ---------------------------------------------------------------- an audit


def test_an_audit_shows_its_verdict_tables_and_plots() -> None:
    result = make_audit_result()
    html = result._repr_html_()
    assert_self_contained(html)
    assert "WARNING" in html and "msnb-warning" in html
    assert str(escape(result.verdict.headline)) in html
    assert all(str(escape(d)) in html for d in result.verdict.details)
    assert "fashion_cnn.safetensors" in html and result.run_id in html
    # robust accuracy per attack and eps, with Clopper-Pearson intervals: 483, 62 (fgsm), 351, 4 (pgd) and the
    # worst case 342, 2 correct of 1,000
    for value in ("48.3%", "6.2%", "35.1%", "0.4%", "34.2%", "0.2%", "Worst case (per sample)"):
        assert f">{value}<" in html, value
    worst = tables.robustness_table(result.robustness).rows[-1]  # type: ignore[arg-type]
    assert [c.ci for c in worst.cells if c] == ["31.3–37.2%", "0.0–0.7%"]
    assert all(f">{c.value}<" in html and f">{c.ci}<" in html for c in worst.cells if c)
    assert "ε = 0.03" in html and "ε = 0.1" in html and "clean accuracy 91.2% (89.3–92.9%)" in html
    # the unresolved sanity flag and what it means; the resolved one is not listed
    assert f"Sanity check nonzero-gradients unresolved: {OVERESTIMATED}." in html
    assert "more-iterations" not in html
    # membership: binormal ROCs, AUC = Phi(shift / sqrt 2): 0.611 (shift 0.4) and 0.760 (shift 1)
    assert ">0.611<" in html and ">0.760<" in html
    for row in tables.privacy_rows(result.privacy):  # type: ignore[arg-type]
        assert f">{row.auc_ci}<" in html and f">{row.epsilon}<" in html
        assert all(f">{t.value}<" in html and f">{t.ci}<" in html for t in row.tpr)
    assert all(f"TPR @ {f} FPR" in html for f in ("0.1%", "1%", "10%"))
    assert "5,000 members and 5,000 non-members scored" in html
    assert len(images(html)) == 2  # the robustness curve and the ROC


def test_strings_from_the_result_are_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    base = make_audit_result()
    result = dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, path=f"models/{evil}"),
        verdict=dataclasses.replace(base.verdict, headline=evil, details=[evil]),
    )
    html = result._repr_html_()
    assert "<img src=x" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") == 3


def test_an_audit_without_privacy_or_robustness_still_displays() -> None:
    no_privacy = make_audit_result(privacy=None)._repr_html_()
    assert_self_contained(no_privacy)
    assert "Robustness" in no_privacy and ">34.2%<" in no_privacy
    assert "Membership inference" not in no_privacy and len(images(no_privacy)) == 1

    no_robustness = make_audit_result(robustness=None)._repr_html_()
    assert_self_contained(no_robustness)
    assert "<h4>Robustness</h4>" not in no_robustness and ">0.760<" in no_robustness
    assert len(images(no_robustness)) == 1

    result = make_audit_result(robustness=None, privacy=None)
    neither = result._repr_html_()
    assert_self_contained(neither)
    assert "neither a robustness nor a privacy" in neither and str(escape(result.verdict.headline)) in neither
    assert images(neither) == []

    # membership attacks without a ROC (e.g. read from an old file): the table, no plot
    priv = make_audit_result().privacy
    assert priv is not None
    flat = [dataclasses.replace(a, roc_fpr=[], roc_tpr=[]) for a in priv.attacks]
    no_roc = make_audit_result(robustness=None, privacy=dataclasses.replace(priv, attacks=flat))._repr_html_()
    assert ">0.611<" in no_roc and images(no_roc) == []


def test_unknown_verdict_level_and_a_model_without_a_path() -> None:
    base = make_audit_result()
    model = ModelInfo(path=None, sha256=None, arch=None, format="onnx", num_classes=10, input_shape=[1, 28, 28])
    result = dataclasses.replace(base, model=model, verdict=dataclasses.replace(base.verdict, level="odd"))
    html = result._repr_html_()
    assert "msnb-unknown" in html and ">ODD<" in html and "onnx model" in html


# ---------------------------------------------------------------- a comparison


def make_comparison() -> Comparison:
    """A baseline, an adversarially trained model (3 points less clean accuracy: eligible) and a DP-SGD model 15
    points below the baseline (not eligible at the default 5 points), whose robustness checks stayed unresolved."""
    models = [
        ModelSummary(
            name="base",
            baseline=True,
            defense="standard",
            clean_accuracy=0.95,
            clean_ci=Interval(0.93, 0.97),
            robust_accuracy={"0.05": 0.40, "0.1": 0.10},
            robust_ci={"0.05": Interval(0.35, 0.45), "0.1": Interval(0.07, 0.13)},
            mia_attack="lira",
            mia_auc=0.62,
            mia_auc_ci=Interval(0.60, 0.64, method="bootstrap"),
            mia_tpr=0.021,
            mia_tpr_ci=Interval(0.015, 0.028),
            epsilon_lower_bound=0.81,
            verdict_level="warning",
            verdict_headline="Not robust at ε = 0.05",
        ),
        ModelSummary(
            name="pgd-at",
            defense="pgd-at",
            clean_accuracy=0.92,
            robust_accuracy={"0.05": 0.71, "0.1": 0.52},
            mia_attack="loss-threshold",
            mia_auc=0.55,
            mia_tpr=0.004,
            epsilon_lower_bound=0.0,
            verdict_level="ok",
        ),
        ModelSummary(
            name="dp-sgd",
            defense="dp-sgd",
            clean_accuracy=0.80,
            robust_accuracy={"0.05": 0.30, "0.1": 0.05},
            mia_auc=0.51,
            mia_tpr=0.001,
            dp_epsilon=2.95,
            dp_delta=1e-5,
            verdict_level="fail",
            robustness_overestimated=True,
        ),
    ]
    return Comparison(
        schema_version=COMPARISON_SCHEMA_VERSION,
        created_at="2025-01-14T10:00:00+00:00",
        baseline="base",
        models=models,
        recommendation=recommend(models, baseline="base", max_accuracy_drop=5.0),
        settings={"seed": 3, "norm": "linf", "preset": "quick"},
        data={"name": "digits", "split_seed": 0},
    )


def test_a_comparison_shows_its_recommendation_table_and_plot() -> None:
    c = make_comparison()
    assert c.recommendation.most_robust == "pgd-at" and "dp-sgd" in c.recommendation.excluded
    html = c._repr_html_()
    assert_self_contained(html)
    assert "base and 2 hardened models" in html and "data digits · seed 3" in html
    for sentence in c.recommendation.outcome():
        assert f"<p>{escape(sentence)}</p>" in html
    assert "Most robust at ε = 0.1: pgd-at." in html
    assert f"Not eligible: dp-sgd: {escape(c.recommendation.excluded['dp-sgd'])}" in html
    assert "Robust acc.<br>ε = 0.05" in html and "Robust acc.<br>ε = 0.1" in html
    for cell in (">95.0%<", ">93.0–97.0%<", ">40.0%<", ">71.0%<", ">52.0%<", ">0.620<", ">0.600–0.640<"):
        assert cell in html, cell
    assert ">2.10%<" in html and ">1.50–2.80%<" in html  # TPR at 0.1% FPR, two decimals
    assert ">ε 2.95 (δ 1e-05)<" in html and ">0.81<" in html and ">0<" in html
    assert "★ most robust" in html and OVERESTIMATED in html
    assert ">PASS<" in html and ">WARNING<" in html and ">FAIL<" in html
    assert len(images(html)) == 1  # the trade-off plot


# ---------------------------------------------------------------- a one-run DP audit


def make_dp_audit(*, claimed: float | None = 2.0, lower: float = 0.734) -> DPAuditResult:
    rng = np.random.default_rng(0)
    return DPAuditResult(
        claimed_epsilon=claimed,
        delta=1e-5,
        accountant=None if claimed is None else "prv",
        epsilons={} if claimed is None else {"prv": 2.0, "rdp": 2.31},
        lower_bound=lower,
        k_plus=40,
        k_minus=40,
        r=80,
        v=58,
        canaries=500,
        included=251,
        canary_kind="mislabelled",
        score="scaled-logit",
        beta=0.05,
        level=0.95,
        correction="bonferroni",
        tests=6,
        included_scores=[float(x) for x in rng.normal(1.0, 1.0, 251)],
        excluded_scores=[float(x) for x in rng.normal(0.0, 1.0, 249)],
        train_seconds=12.5,
        score_seconds=0.2,
        bound_seconds=0.1,
        seed=0,
        passed=claimed is None or lower <= claimed,
    )


@pytest.mark.parametrize(
    ("claimed", "lower", "level", "label"),
    [(2.0, 0.734, "ok", "PASS"), (0.5, 0.734, "fail", "FAIL"), (None, 1.2, "unknown", "NO CLAIM")],
)
def test_a_dp_audit_shows_its_verdict_epsilons_and_histograms(
    claimed: float | None, lower: float, level: str, label: str
) -> None:
    result = make_dp_audit(claimed=claimed, lower=lower)
    html = result._repr_html_()
    assert_self_contained(html)
    assert f"msnb-{level}" in html and f">{label}<" in html
    assert f"<p>{escape(result.verdict())}</p>" in html
    assert f"Empirical ε ≥ {lower:.3f}" in html and f">{lower:.4f}<" in html
    if claimed is None:
        assert "none (no DP claim)" in html and "accountant" not in html
    else:
        assert f"{claimed:.4f} (PRV)" in html
        assert "PRV accountant</th><td>2.0000<" in html and "RDP accountant</th><td>2.3100<" in html
    assert '58 correct of 80 (40 "in", 40 "out")' in html
    assert "500 mislabelled, 251 included" in html
    assert len(images(html)) == 1  # the canaries' score histograms


# ---------------------------------------------------------------- show() and the hook


@pytest.mark.parametrize(
    ("make", "full_page", "prefix"),
    [
        (make_audit_result, render_html, "modelsec-report-"),
        (make_comparison, render_comparison_html, "modelsec-comparison-"),
        (make_dp_audit, render_dp_audit_html, "modelsec-dp-audit-"),
    ],
)
def test_show_writes_the_full_report_and_opens_it(
    make: Any, full_page: Any, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = make()
    path = result.show()
    assert path.parent == tmp_path and path.name.startswith(prefix) and path.suffix == ".html"
    assert opened == [path.as_uri()]
    assert path.read_text(encoding="utf-8") == full_page(result)


def test_only_results_display() -> None:
    with pytest.raises(TypeError, match="cannot display a dict"):
        display.repr_html({})


def test_a_registered_backend_replaces_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(display, "_registered", [])
    seen: list[Any] = []
    display.register_backend(display.DisplayBackend(repr_html=lambda r: "<p>mine</p>", show=seen.append))
    result = make_audit_result()
    assert result._repr_html_() == "<p>mine</p>"
    result.show()
    assert seen == [result]


def test_a_fresh_interpreter_finds_the_report_when_a_result_displays() -> None:
    """A result loaded without anything having imported the report (a fresh kernel) still renders: the hook imports
    ``modelsec.report.notebook`` by name, whose import registers it."""
    code = (
        "import sys\n"
        "from tests.report_fixtures import make_audit_result\n"
        "assert not any(m.startswith('modelsec.report') for m in sys.modules), 'report imported early'\n"
        "html = make_audit_result()._repr_html_()\n"
        "assert 'modelsec.report.notebook' in sys.modules and 'data:image/png;base64,' in html\n"
        "print('ok')\n"
    )
    src = str(Path(modelsec.__file__).resolve().parents[1])  # the modelsec under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), src])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------- the example notebook


def code_cells(path: Path) -> list[str]:
    """The code cells of a notebook (nbformat 4), each checked to have no stored outputs."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in cells:
        assert cell["outputs"] == [] and cell["execution_count"] is None, "outputs are not stored"
    return ["".join(c["source"]) for c in cells]


def run_cells(cells: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """Execute ``cells`` in order in one namespace, as a kernel would; returns the namespace and what each cell
    displays: the value of its last line when that is an expression (else ``None``)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    shown: list[Any] = []
    for i, source in enumerate(cells):
        tree = ast.parse(source, filename=f"<cell {i}>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, f"<cell {i}>", "exec"), namespace)
        shown.append(
            None if last is None else eval(compile(ast.Expression(last.value), f"<cell {i}>", "eval"), namespace)
        )
    return namespace, shown


@pytest.mark.slow
def test_the_example_notebook_runs_and_displays_its_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace, shown = run_cells(code_cells(NOTEBOOK))

    results = [x for x in shown if isinstance(x, AuditResult)]
    comparisons = [x for x in shown if isinstance(x, Comparison)]
    assert len(results) == 1 and len(comparisons) == 1
    result, comparison = results[0], comparisons[0]
    assert namespace["result"] is result and namespace["comparison"] is comparison
    assert Path(namespace["work"]).parent == tmp_path  # every file in the temporary folder

    html = result._repr_html_()
    assert str(escape(result.verdict.headline)) in html and '<img src="data:image/png;base64,' in html
    assert result.robustness is not None and result.privacy is not None
    assert len(images(html)) == 2
    for eps, acc in result.robustness.robust_accuracy.items():
        assert tables.pct(acc) in html
        assert f"ε = {tables.eps_label(float(eps))}" in html
    assert all(f">{a.attack}<" in html for a in result.privacy.attacks)
    # the cell after the audit shows the worst case per eps as text
    assert {"0.05", "0.1"} <= set(next(x for x in shown if isinstance(x, dict)))

    html = comparison._repr_html_()
    assert all(str(escape(s)) in html for s in comparison.recommendation.outcome())
    assert '<img src="data:image/png;base64,' in html
    assert [m.name for m in comparison.models] == ["digits-mlp", "digits-mlp-fgsm-rs"]
    assert comparison.model("digits-mlp").robust_accuracy == result.robustness.robust_accuracy  # same audit, seed
