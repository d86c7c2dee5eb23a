"""Results in a Jupyter notebook: a compact, self-contained HTML fragment per result (``_repr_html_``), and the full
report opened in the web browser (``show()``).

:func:`render_notebook_html` renders an :class:`~modelsec.results.AuditResult` (the verdict, robust accuracy per
epsilon with confidence intervals, each membership attack's AUC and TPR at low FPR, the robustness curve and the
log-log ROC), a :class:`~modelsec.results.comparison.Comparison` (the recommendation, the summary table, the
trade-off plot) or a :class:`~modelsec.results.dp_audit.DPAuditResult` (the verdict, the claim beside every
accountant's epsilon and the empirical lower bound, the canaries' score histograms). The numbers are formatted by the
report's own table builders (:mod:`modelsec.report.tables`, :func:`~modelsec.report.comparison.comparison_rows`)
and the figures drawn by its plot functions, so a notebook shows what ``report.html`` shows. The fragment is one
``<div>`` with its CSS scoped to it (a notebook page holds many outputs), no ``id`` attributes (they would repeat),
plots as PNG ``data:`` URIs, no script and nothing fetched; every string from a result is escaped by the template
engine, as in the full report.

The results layer cannot import this module (the report sits above it), so the result classes reach it through the
hook of :mod:`modelsec.results.display`: importing this module registers :func:`render_notebook_html` and
:func:`show_report` there (see that module for why and how it is found).
"""

from __future__ import annotations

import os
import tempfile
import webbrowser
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Template

from modelsec.report import tables
from modelsec.report.comparison import comparison_rows, render_comparison_html
from modelsec.report.dp_audit import render_dp_audit_html, score_histograms
from modelsec.report.html import _environment, render_html
from modelsec.report.plots import figure_to_png_data_uri, membership_roc, robustness_curve, tradeoff_plot
from modelsec.results.audit import OVERESTIMATED, AuditResult
from modelsec.results.comparison import Comparison
from modelsec.results.display import DisplayBackend, register_backend
from modelsec.results.dp_audit import DPAuditResult

NOTEBOOK_DPI = 100  # the report's figures at 100 dpi (700 px wide, shown smaller): the fragment stays small
IMAGE_WIDTH = 620  # one plot a row (a comparison, a DP audit)
PAIR_WIDTH = 450  # an audit's two plots side by side

_STYLE = """
.modelsec-nb { color: #1f2328; background: #fff; max-width: 980px; padding: 14px 18px; border: 1px solid #d1d9e0;
  border-radius: 8px; font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial,
  sans-serif; }
.modelsec-nb .msnb-eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 11px; color: #59636e;
  font-weight: 600; }
.modelsec-nb .msnb-title { font-size: 17px; font-weight: 650; margin: 0 0 2px; }
.modelsec-nb .msnb-meta, .modelsec-nb .msnb-note { color: #59636e; font-size: 12.5px; margin: 4px 0; }
.modelsec-nb h4 { font-size: 15px; margin: 18px 0 6px; padding-bottom: 4px; border-bottom: 1px solid #d1d9e0; }
.modelsec-nb .msnb-verdict { display: flex; gap: 14px; align-items: flex-start; margin: 10px 0 4px;
  padding: 10px 14px; border-radius: 6px; border: 1px solid; border-left-width: 6px; }
.modelsec-nb .msnb-verdict p { margin: 0 0 2px; font-weight: 600; }
.modelsec-nb .msnb-verdict ul { margin: 4px 0 0; padding-left: 18px; font-size: 13px; }
.modelsec-nb .msnb-label { flex: none; font-weight: 700; font-size: 12px; letter-spacing: .06em; color: #fff;
  padding: 2px 8px; border-radius: 4px; }
.modelsec-nb .msnb-ok { background: #dafbe1; border-color: #1a7f37; }
.modelsec-nb .msnb-ok .msnb-label { background: #1a7f37; }
.modelsec-nb .msnb-warning { background: #fff8c5; border-color: #d4a72c; }
.modelsec-nb .msnb-warning .msnb-label { background: #9a6700; }
.modelsec-nb .msnb-fail { background: #ffebe9; border-color: #cf222e; }
.modelsec-nb .msnb-fail .msnb-label { background: #cf222e; }
.modelsec-nb .msnb-unknown { background: #f6f8fa; border-color: #59636e; }
.modelsec-nb .msnb-unknown .msnb-label { background: #59636e; }
.modelsec-nb .msnb-wrap { overflow-x: auto; max-width: 100%; }
.modelsec-nb table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
.modelsec-nb th, .modelsec-nb td { padding: 4px 8px; border-bottom: 1px solid #e6eaef; text-align: left;
  vertical-align: top; color: #1f2328; background: transparent; }
.modelsec-nb thead th { font-size: 12px; color: #59636e; font-weight: 600; border-bottom: 2px solid #d1d9e0;
  white-space: normal; }
.modelsec-nb thead th.msnb-num { white-space: normal; min-width: 64px; }
.modelsec-nb .msnb-name { white-space: nowrap; }
.modelsec-nb .msnb-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.modelsec-nb .msnb-ci { display: block; color: #59636e; font-size: 11.5px; }
.modelsec-nb tr.msnb-worst td { font-weight: 650; background: #f6f8fa; border-top: 2px solid #d1d9e0; }
.modelsec-nb .msnb-bad { color: #cf222e; font-weight: 600; font-size: 13px; }
.modelsec-nb .msnb-plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.modelsec-nb img { max-width: 100%; height: auto; border: 1px solid #e6eaef; border-radius: 4px; background: #fff; }
.modelsec-nb code { font-size: 12px; background: #f6f8fa; padding: 0 4px; border-radius: 3px; }
"""

_GATE = """{% macro gate_block(gate, title) %}
<h4>{{ title }}: {% if gate.passed %}passed{% else %}failed ({{ gate.failed | length }} of {{ gate.rules | length
  }} rules){% endif %}</h4>
{% if gate.policy %}<div class="msnb-meta">policy file {{ gate.policy }}</div>{% endif %}
<div class="msnb-wrap"><table><thead><tr><th>Rule</th><th>Outcome</th><th>Measured</th></tr></thead><tbody>
{% for rule in gate.rules %}<tr><td>{{ rule.rule }}</td><td>{% if rule.passed %}PASS{% else %}<b>FAIL</b>{% endif
  %}</td><td>{{ rule.message }}</td></tr>
{% endfor %}</tbody></table></div>
{% endmacro %}"""
"""A policy gate's outcome (``--policy``): passed or failed, then each rule; shared by the three fragments."""

_AUDIT = (
    _GATE
    + """<div class="modelsec-nb"><style>{{ style }}</style>
<div class="msnb-eyebrow">modelsec audit</div>
<div class="msnb-title">{{ model_name }}</div>
<div class="msnb-meta">data {{ r.data.name }} · seed {{ r.seed }} · run {{ r.run_id }} · {{ r.created_at }}</div>
<div class="msnb-verdict msnb-{{ level }}"><span class="msnb-label">{{ level_label }}</span><div>
  <p>{{ r.verdict.headline }}</p>
  {% if r.verdict.details %}<ul>{% for d in r.verdict.details %}<li>{{ d }}</li>{% endfor %}</ul>{% endif %}
</div></div>
{% if r.gate %}{{ gate_block(r.gate, "Policy") }}{% endif %}
{% if rob_table %}
<h4>Robustness</h4>
<div class="msnb-meta">clean accuracy {{ clean.text }} on {{ r.robustness.n | count }} test records{% if
  r.robustness.preset %} · preset {{ r.robustness.preset }}{% endif %}</div>
{% if rob_table.eps %}
<div class="msnb-wrap"><table><thead><tr><th>Attack</th><th>Norm</th>
  {% for e in rob_table.eps_labels %}<th class="msnb-num">ε = {{ e }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rob_table.rows %}
  <tr{% if row.worst_case %} class="msnb-worst"{% endif %}><td>{{ row.attack }}</td><td>{{ row.norm }}</td>
  {% for c in row.cells %}<td class="msnb-num">{% if c %}{{ c.value }}{% if c.ci %}<span class="msnb-ci">{{ c.ci
    }}</span>{% endif %}{% else %}—{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table></div>
{% endif %}
{% for f in unresolved %}<div class="msnb-bad">Sanity check {{ f.check }} unresolved: {{ f.consequence }}.</div>
{% endfor %}
<div class="msnb-note">Robust accuracy; the last row is the per-sample worst case over every attack.
  {{ rob_ci_note }}</div>
{% endif %}
{% if priv_rows %}
<h4>Membership inference</h4>
<div class="msnb-wrap"><table><thead><tr><th>Attack</th><th class="msnb-num">AUC</th>
  {% for f in fpr_labels %}<th class="msnb-num">TPR @ {{ f }} FPR</th>{% endfor %}
  <th class="msnb-num">ε lower bound</th></tr></thead><tbody>
{% for p in priv_rows %}
  <tr><td class="msnb-name">{{ p.attack }}</td>
  <td class="msnb-num">{{ p.auc }}{% if p.auc_ci %}<span class="msnb-ci">{{ p.auc_ci }}</span>{% endif %}</td>
  {% for t in p.tpr %}<td class="msnb-num">{{ t.value }}{% if t.ci %}<span class="msnb-ci">{{ t.ci
    }}</span>{% endif %}</td>{% endfor %}
  <td class="msnb-num">{{ p.epsilon }}{% if p.epsilon_at %}<span class="msnb-ci">{{ p.epsilon_at }}</span>{% endif
    %}</td></tr>
{% endfor %}
</tbody></table></div>
<div class="msnb-note">{{ priv_counts }} scored; members are the positive class. The ε lower bound is empirical
  evidence, never a guarantee. {{ priv_ci_note }}</div>
{% endif %}
{% if not r.robustness and not r.privacy %}<p class="msnb-note">This audit has neither a robustness nor a privacy
  part.</p>{% endif %}
{% if plots %}<div class="msnb-plots">{% for src, alt in plots %}<img src="{{ src }}" width="{{ width }}"
  alt="{{ alt }}">{% endfor %}</div>{% endif %}
<div class="msnb-note"><code>result.show()</code> opens the full report in the web browser.</div>
</div>
"""
)

_COMPARISON = (
    _GATE
    + """<div class="modelsec-nb"><style>{{ style }}</style>
<div class="msnb-eyebrow">modelsec comparison</div>
<div class="msnb-title">{{ c.baseline }} and {{ c.models | length - 1 }} hardened model{{ "s" if c.models | length
  != 2 else "" }}</div>
<div class="msnb-meta">data {{ c.data.get("name", "") }} · seed {{ c.settings.get("seed", "") }} · {{ c.created_at
  }}</div>
<div class="msnb-verdict msnb-unknown"><span class="msnb-label">RECOMMENDATION</span><div>
  {% for s in rec.outcome() %}<p>{{ s }}</p>{% endfor %}
  {% if rec.excluded or rec.notes %}<ul>
  {% for n, why in rec.excluded.items() %}<li>Not eligible: {{ n }}: {{ why }}</li>{% endfor %}
  {% for n in rec.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</div></div>
{% for m in c.models if m.gate %}{{ gate_block(m.gate, "Policy, " ~ m.name) }}{% endfor %}
<div class="msnb-wrap"><table><thead><tr><th>Model</th><th>Defense</th><th class="msnb-num">Clean acc.</th>
  {% for e in eps_labels %}<th class="msnb-num">Robust acc.<br>ε = {{ e }}</th>{% endfor %}
  <th class="msnb-num">MIA AUC</th><th class="msnb-num">TPR @ 0.1% FPR</th><th class="msnb-num">ε lower bound</th>
  <th class="msnb-num">DP ε</th><th>Verdict</th></tr></thead><tbody>
{% for m in rows %}
  <tr><td class="msnb-name">{{ m.name }}{% if m.baseline %}<span class="msnb-ci">baseline</span>{% endif %}{% for
    t in m.tags %}<span class="msnb-ci">★ {{ t }}</span>{% endfor %}</td><td>{{ m.defense }}</td>
  <td class="msnb-num">{{ m.clean.value }}{% if m.clean.ci %}<span class="msnb-ci">{{ m.clean.ci }}</span>{% endif
    %}</td>
  {% for x in m.robust %}<td class="msnb-num">{% if x %}{{ x.value }}{% if x.ci %}<span class="msnb-ci">{{ x.ci
    }}</span>{% endif %}{% else %}—{% endif %}</td>{% endfor %}
  <td class="msnb-num">{{ m.auc }}{% if m.auc_ci %}<span class="msnb-ci">{{ m.auc_ci }}</span>{% endif %}{% if
    m.mia_attack %}<span class="msnb-ci">{{ m.mia_attack }}</span>{% endif %}</td>
  <td class="msnb-num">{{ m.tpr.value }}{% if m.tpr.ci %}<span class="msnb-ci">{{ m.tpr.ci }}</span>{% endif %}</td>
  <td class="msnb-num">{{ m.epsilon }}</td><td class="msnb-num">{{ m.dp }}</td>
  <td>{{ m.level_label }}{% if m.overestimated %}<span class="msnb-bad msnb-ci">{{ overestimated }}</span>{% endif
    %}</td></tr>
{% endfor %}
</tbody></table></div>
<div class="msnb-note">The same audit on every model: robust accuracy is the per-sample worst case ({{ norm }});
  the membership numbers are the strongest attack's. Ranges are 95% confidence intervals.</div>
{% if plot %}<div class="msnb-plots"><img src="{{ plot }}" width="{{ width }}" alt="Clean accuracy against worst-case
  robust accuracy, coloured by membership leakage"></div>{% endif %}
<div class="msnb-note"><code>comparison.show()</code> opens the full comparison report in the web browser.</div>
</div>
"""
)

_DP_AUDIT = (
    _GATE
    + """<div class="modelsec-nb"><style>{{ style }}</style>
<div class="msnb-eyebrow">modelsec one-run privacy audit</div>
<div class="msnb-title">Empirical ε ≥ {{ "%.3f" | format(r.lower_bound) }}{% if r.claimed_epsilon is not none
  %}, claimed {{ "%.3f" | format(r.claimed_epsilon) }}{% endif %}</div>
<div class="msnb-verdict msnb-{{ level }}"><span class="msnb-label">{{ level_label }}</span><div>
  <p>{{ verdict }}</p></div></div>
{% if r.gate %}{{ gate_block(r.gate, "Policy") }}{% endif %}
<div class="msnb-wrap"><table><tbody>
  <tr><th>claimed ε</th><td>{% if r.claimed_epsilon is not none %}{{ "%.4f" | format(r.claimed_epsilon) }}{% if
    r.accountant %} ({{ r.accountant | upper }}){% endif %}{% else %}none (no DP claim){% endif %}</td></tr>
  {% for name, value in accountants %}<tr><th>{{ name | upper }} accountant</th><td>{% if value is not none %}{{
    "%.4f" | format(value) }}{% else %}n/a{% endif %}</td></tr>{% endfor %}
  <tr><th>{% if r.runs %}combined lower bound{% else %}empirical lower bound{% endif %}</th><td{% if not r.passed
    %} class="msnb-bad"{% endif %}>{{ "%.4f" | format(r.lower_bound) }}</td></tr>
  <tr><th>δ</th><td>{{ "%g" | format(r.delta) }}</td></tr>
  <tr><th>confidence</th><td>{{ "%.4g" | format(100 * r.level) }}% per choice of guesses; best of {{ r.tests }}
    (correction: {{ r.correction }})</td></tr>
  <tr><th>guesses</th><td>{{ r.v }} correct of {{ r.r }} ({{ r.k_plus }} "in", {{ r.k_minus }} "out")</td></tr>
  <tr><th>canaries</th><td>{{ r.canaries }} {{ r.canary_kind }}, {{ r.included }} included{% if r.run_count %};
    {{ r.run_count }} runs{% endif %}</td></tr>
</tbody></table></div>
<div class="msnb-plots"><img src="{{ plot }}" width="{{ width }}" alt="Histograms of the canaries' scores, included
  vs excluded"></div>
<div class="msnb-note"><code>result.show()</code> opens the full page in the web browser.</div>
</div>
"""
)

DP_LEVELS = {"ok": ("ok", "PASS"), "fail": ("fail", "FAIL"), "unclaimed": ("unknown", "NO CLAIM")}
"""A DP audit's status as a verdict level and label: within its claim, above it, or no claim to check."""


@cache
def _template(source: str) -> Template:
    """The fragment template, compiled once by the report's environment (autoescaping, its filters)."""
    return _environment().from_string(source)


def _uri(fig: Any) -> str:
    return figure_to_png_data_uri(fig, dpi=NOTEBOOK_DPI)


def audit_fragment(result: AuditResult) -> str:
    """The audit as a notebook fragment: the verdict, the policy gate's rules when the audit ran with a policy,
    robust accuracy per (attack, epsilon) and the per-sample worst case with intervals, any unresolved sanity
    check, each membership attack's AUC and TPR at 0.1%, 1% and 10% FPR with intervals and its epsilon lower bound,
    the robustness curve and the ROC. Either part may be missing."""
    rob, priv = result.robustness, result.privacy
    ctx: dict[str, Any] = {
        "style": _STYLE,
        "r": result,
        "model_name": tables.model_name(result),
        "level": tables.verdict_level(result.verdict.level),
        "level_label": tables.LEVEL_LABELS.get(result.verdict.level, result.verdict.level.upper() or "UNKNOWN"),
        "fpr_labels": [tables.fpr_label(f) for f in tables.LOW_FPRS],
        "width": PAIR_WIDTH,
        "rob_table": None,
        "priv_rows": None,
        "plots": [],
    }
    if rob is not None:
        ctx["rob_table"] = tables.robustness_table(rob)
        ctx["clean"] = tables.Rate.of_interval(rob.clean_accuracy, rob.clean_ci)
        ctx["unresolved"] = [f for f in rob.flags if not f.resolved]
        ctx["rob_ci_note"] = tables.ci_note(tables.robustness_intervals(rob))
        alt = "Robust accuracy against epsilon, per attack and the worst case"
        ctx["plots"].append((_uri(robustness_curve(rob)), alt))
    if priv is not None:
        ctx["priv_rows"] = tables.privacy_rows(priv)
        ctx["priv_counts"] = tables.privacy_counts(priv) or "No records"
        ctx["priv_ci_note"] = tables.ci_note(tables.privacy_intervals(priv))
        if any(a.roc_fpr for a in priv.attacks):
            ctx["plots"].append((_uri(membership_roc(priv)), "Membership attacks' ROC curves on log-log axes"))
    return _template(_AUDIT).render(**ctx)


def comparison_fragment(comparison: Comparison) -> str:
    """The comparison as a notebook fragment: the recommendation, one row per model (the comparison report's
    :func:`~modelsec.report.comparison.comparison_rows`) and the trade-off plot."""
    rec = comparison.recommendation
    has_plot = any(m.clean_accuracy is not None and m.robust_at(rec.eps) is not None for m in comparison.models)
    return _template(_COMPARISON).render(
        style=_STYLE,
        c=comparison,
        rec=rec,
        rows=comparison_rows(comparison),
        eps_labels=[tables.eps_label(float(k)) for k in comparison.eps_keys],
        norm=tables.norm_label(str(comparison.settings.get("norm", "linf"))),
        plot=_uri(tradeoff_plot(comparison)) if has_plot else None,
        overestimated=OVERESTIMATED,
        width=IMAGE_WIDTH,
    )


def dp_audit_fragment(result: DPAuditResult) -> str:
    """The one-run DP audit as a notebook fragment: its verdict, the claim beside every accountant's epsilon and the
    empirical lower bound, the guesses behind it, and the canaries' score histograms."""
    status = "unclaimed" if result.claimed_epsilon is None else ("ok" if result.passed else "fail")
    level, label = DP_LEVELS[status]
    return _template(_DP_AUDIT).render(
        style=_STYLE,
        r=result,
        level=level,
        level_label=label,
        verdict=result.verdict(),
        accountants=sorted(result.epsilons.items()),
        plot=_uri(score_histograms(result)),
        width=IMAGE_WIDTH,
    )


Renderers = tuple[Callable[[Any], str], Callable[[Any], str], str]
_RENDERERS: dict[type, Renderers] = {
    AuditResult: (audit_fragment, render_html, "report"),
    Comparison: (comparison_fragment, render_comparison_html, "comparison"),
    DPAuditResult: (dp_audit_fragment, render_dp_audit_html, "dp-audit"),
}
"""Per result type: its notebook fragment, its full page, and the name its temporary file starts with."""


def _renderers(result: Any) -> Renderers:
    for cls, renderers in _RENDERERS.items():
        if isinstance(result, cls):
            return renderers
    known = ", ".join(cls.__name__ for cls in _RENDERERS)
    raise TypeError(f"modelsec cannot display a {type(result).__name__}; it displays {known}")


def render_notebook_html(result: AuditResult | Comparison | DPAuditResult) -> str:
    """``result`` as a self-contained HTML fragment for a notebook's output (what ``result._repr_html_()`` returns).

    >>> render_notebook_html(object())
    Traceback (most recent call last):
    ...
    TypeError: modelsec cannot display a object; it displays AuditResult, Comparison, DPAuditResult
    """
    return _renderers(result)[0](result)


def show_report(result: AuditResult | Comparison | DPAuditResult) -> Path:
    """Write ``result``'s full HTML report (the page ``modelsec audit`` writes, without the adversarial-example grid,
    whose images are not in the result; for a comparison, links to the models' own reports do not resolve from the
    temporary folder) to a new file in the temporary folder, open it with :func:`webbrowser.open`, and return its
    path. The file is left there for the browser to read."""
    _, full_page, name = _renderers(result)
    page = full_page(result)
    fd, filename = tempfile.mkstemp(prefix=f"modelsec-{name}-", suffix=".html")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    path = Path(filename)
    webbrowser.open(path.as_uri())
    return path


register_backend(DisplayBackend(repr_html=render_notebook_html, show=show_report))
