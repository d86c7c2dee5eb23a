"""The audit report as GitHub-flavoured Markdown: the HTML report's verdict and tables, no plots.

Meant for terminals and pull-request comments. Strings from the result are escaped so that a model
path or a message cannot break a table (``|``), start emphasis or inject HTML (``<script>`` becomes
``\\<script\\>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from modelsec.report import tables
from modelsec.results.audit import AuditResult, PrivacyResult, RobustnessResult
from modelsec.results.gate import GateOutcome

_SPECIAL = re.compile(r"[\\`*\[\]<>|#]|(?<!\w)_|_(?!\w)")
_ICONS = {"ok": "✅", "warning": "⚠️", "fail": "❌", "unknown": "❔"}
_CHECK_ICONS = {"passed": "✅", "warning": "⚠️", "error": "❌"}
_RESOLVED_ICONS = {True: "✅", False: "❌"}


def md_text(s: object) -> str:
    """``s`` as inline Markdown: one line, Markdown and HTML metacharacters backslash-escaped.

    >>> md_text("a|b <i>")
    'a\\\\|b \\\\<i\\\\>'
    """
    one_line = " ".join(str(s).split())
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), one_line)


def md_code(s: object) -> str:
    """``s`` as an inline code span that is safe inside a table cell."""
    text = " ".join(str(s).split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    align = ["---:" if r else ":---" for r in right]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _rate(rate: tables.Rate | None) -> str:
    if rate is None:
        return tables.DASH
    return f"{rate.value} ({rate.ci})" if rate.ci else rate.value


def _robustness(rob: RobustnessResult) -> list[str]:
    clean = tables.Rate.of_interval(rob.clean_accuracy, rob.clean_ci)
    out = [f"**Clean accuracy:** {_rate(clean)} on {tables.count(rob.n)} samples", ""]
    attacks = (
        f"**Attack preset:** {md_code(rob.preset)}" if rob.preset else "**Attacks:** chosen explicitly (no preset)"
    )
    if rob.skipped:
        attacks += f" · {len(rob.skipped)} skipped"
    out += [attacks, "", f"**Each prediction, clean and adversarial:** {md_text(rob.prediction)}", ""]
    table = tables.robustness_table(rob)
    if table.eps:
        header = ["Attack", "Norm", *(f"ε = {e}" for e in table.eps_labels)]
        rows = []
        for row in table.rows:
            cells = [_rate(c) for c in row.cells]
            if row.worst_case:
                rows.append([f"**{row.attack}**", md_text(row.norm), *(f"**{c}**" for c in cells)])
            else:
                rows.append([md_text(row.attack), md_text(row.norm), *cells])
        out += _table(header, rows, [False, False, *([True] * len(table.eps))])
        note = tables.ci_note(tables.robustness_intervals(rob))
        chain = " after each attack and every attack above it (a chain)" if rob.chain else ""
        out += ["", f"Robust accuracy (share still classified correctly{chain}). {note}".strip()]
        out += [line for text in tables.probe_notes(rob) for line in ("", md_text(text))]
    else:
        out.append("_No attack results were recorded._")
    if rob.skipped:
        out += ["", "**Skipped attacks**", ""]
        out += [f"- {md_code(s.attack)}: {md_text(s.reason)}" for s in rob.skipped]
    if rob.min_norm:
        out += ["", "**Minimal perturbations**", ""]
        out += _min_norm(rob)
    out += ["", "**Sanity checks**", ""]
    checks = tables.check_rows(rob)
    if not checks:
        out.append("_No sanity checks were run._")
    for c in checks:
        out.append(f"- {_CHECK_ICONS.get(c.status, '')} {md_code(c.check)}: {c.status}")
        for f in c.flags:
            out.append(f"  - {md_text(f.message)}")
            remedy = f"Remedy: {md_text(f.remedy)}" if f.remedy else "No remedy was applied."
            if f.resolved:
                out.append(f"    - {_RESOLVED_ICONS[True]} **resolved** — {remedy}")
            else:
                out.append(f"    - {_RESOLVED_ICONS[False]} **unresolved: {f.consequence}** — {remedy}")
    if rob.adversarial_file:
        out += ["", f"Worst-case adversarial examples: {md_code(rob.adversarial_file)} (relative to `result.json`)."]
    return out


def _min_norm(rob: RobustnessResult) -> list[str]:
    quantiles = [tables.quantile_label(q) for q in tables.MIN_NORM_QUANTILES]
    header = ["Attack", "Norm", "Found", "Median", "Mean", *quantiles]
    rows = [
        [md_text(m.attack), md_text(m.norm), f"{m.found} ({m.found_rate})", m.median, m.mean, *m.quantiles]
        for m in tables.min_norm_rows(rob)
    ]
    out = _table(header, rows, [False, False, *([True] * (len(header) - 2))])
    out += [
        "",
        "Smallest perturbation found to change the prediction, over the correctly classified samples the attack "
        "broke (found of those attacked).",
    ]
    return out


def _recipe(priv: PrivacyResult) -> list[str]:
    """The reference models' recipe: a warning when it was guessed (with how to set it), else one line."""
    notice = tables.recipe_notice(priv)
    if notice is None:
        return []
    if not notice.guessed:
        return [f"Reference models: {md_text(notice.text)}.", ""]
    out = [f"> {_ICONS['warning']} **Reference models' recipe guessed:** {md_text(notice.text)}.", ">"]
    out += [f"> - Guessed: {md_text(g)}" for g in notice.guesses]
    out += [
        ">",
        "> LiRA, RMIA and the shadow-model attack are only as strong as their reference models are like the target; "
        "with a guessed recipe they may understate the leakage. How to set it: "
        f"{md_text(notice.how_to_set)}.",
        "",
    ]
    return out


def _privacy(priv: PrivacyResult) -> list[str]:
    out: list[str] = _recipe(priv)
    rows = tables.privacy_rows(priv)
    if rows:
        fprs = [tables.fpr_label(f) for f in tables.LOW_FPRS]
        header = [
            "Attack",
            "AUC",
            *(f"TPR @ {f} FPR" for f in fprs),
            "Balanced acc.",
            "Advantage",
            "ε lower bound",
            "Time",
        ]
        body = [
            [
                md_text(p.attack),
                f"{p.auc} ({p.auc_ci})" if p.auc_ci else p.auc,
                *(_rate(t) for t in p.tpr),
                p.balanced_accuracy,
                p.advantage,
                f"{p.epsilon} ({p.epsilon_at})" if p.epsilon_at else p.epsilon,
                p.seconds,
            ]
            for p in rows
        ]
        out += _table(header, body, [False, *([True] * (len(header) - 1))])
        note = tables.ci_note(tables.privacy_intervals(priv))
        out += [
            "",
            f"Each attack scored {tables.privacy_counts(priv)}. Members are the positive class; chance is TPR = FPR, "
            f"AUC = 0.5, balanced accuracy 50%. {note}".strip(),
            "",
            "**ε lower bound:** the smallest ε that (ε, 0)-DP training could have and still let the attack reach its "
            f"rates, at {tables.epsilon_confidence(priv)} (Clopper-Pearson, Bonferroni). A lower bound from one "
            "attack's evidence, **never a guarantee**: 0 does not mean private.",
        ]
    else:
        out.append("_No membership attacks were recorded._")
    compute = tables.compute_items(priv.compute)
    if compute:
        out += ["", "**Compute used:** " + " · ".join(f"{md_text(k)} {md_text(v)}" for k, v in compute)]
    if priv.notes:
        out += ["", *(f"- {md_text(n)}" for n in priv.notes)]
    return out


def gate_markdown(gate: GateOutcome, heading: str = "## Policy") -> list[str]:
    """The policy gate under ``heading``: passed or failed, then one row per rule (outcome, measured value,
    interval, threshold)."""
    failed = len(gate.failed)
    head = "✅ passed" if gate.passed else f"❌ failed ({failed} of {len(gate.rules)} rules)"
    out = [f"{heading}: {head}", ""]
    if gate.policy:
        out += [f"Policy file {md_code(gate.policy)}", ""]
    rows = [(md_code(r.rule), "✅ PASS" if r.passed else "❌ **FAIL**", md_text(r.message)) for r in gate.rules]
    return out + _table(["Rule", "Outcome", "Measured [interval] and threshold"], rows, [False, False, False])


def render_markdown(result: AuditResult) -> str:
    """The audit's verdict, its policy gate's outcome (when it ran with one), robustness and privacy tables and
    model and data facts as Markdown."""
    v = result.verdict
    level = tables.verdict_level(v.level)
    label = tables.LEVEL_LABELS.get(v.level, v.level.upper() or "UNKNOWN")
    m, d = result.model, result.data
    out = [
        f"# modelsec audit: {md_text(tables.model_name(result))}",
        "",
        f"Run {md_code(result.run_id)} · {md_text(result.created_at)} · data: {md_text(d.name)} · seed {result.seed}",
        "",
        f"> {_ICONS[level]} **{md_text(label)}: {md_text(v.headline)}**",
    ]
    if v.details:
        out.append(">")
        out += [f"> - {md_text(x)}" for x in v.details]

    if result.gate is not None:
        out += ["", *gate_markdown(result.gate)]
    out += ["", "## Adversarial robustness", ""]
    out += _robustness(result.robustness) if result.robustness else ["_Robustness was not audited in this run._"]
    out += ["", "## Membership inference", ""]
    out += _privacy(result.privacy) if result.privacy else ["_Membership inference was not audited in this run._"]

    out += ["", "## Model and data", ""]
    facts = [
        ("Model path", md_code(m.path) if m.path else tables.DASH),
        ("Model SHA-256", md_code(m.sha256) if m.sha256 else tables.DASH),
        ("Architecture / format", f"{md_text(m.arch or tables.DASH)} / {md_text(m.format)}"),
        ("Classes / input shape", f"{m.num_classes} / {md_code(m.input_shape)}"),
        ("Data set", md_text(d.name)),
        (
            "Members / non-members / population",
            " / ".join(tables.count(n) for n in (d.n_members, d.n_nonmembers, d.n_population)),
        ),
    ]
    if d.files:  # the user's own split: the files, not a seed
        facts += [
            (f"File ({md_text(k)})", f"{md_code(f['path'])} (SHA-256 {md_code(f['sha256'])})")
            for k, f in d.files.items()
        ]
    else:
        facts.append(("Split seed", str(d.split_seed)))
    if d.n_test is not None:
        facts.append(("Test records (robustness)", tables.count(d.n_test)))
    facts += [(f"SHA-256 ({md_text(k)})", md_code(h)) for k, h in d.sha256.items()]
    facts += [(f"Overlap {md_text(k)}", f"**{n:,}** ❌" if n > 0 else "0") for k, n in d.overlaps.items()]
    out += _table(["Item", "Value"], facts, [False, False])

    out += ["", "## Run", ""]
    settings = [(md_text(k), md_code(tables.value_text(val))) for k, val in result.settings.items()]
    timings = ", ".join(f"{md_text(k)} {tables.duration(s)}" for k, s in result.timings.items())
    versions = ", ".join(f"{md_text(k)} {md_text(val)}" for k, val in result.versions.items())
    out += _table(["Setting", "Value"], [("seed", str(result.seed)), *settings], [False, False])
    out += [
        "",
        f"**Timings:** {timings or tables.DASH}",
        "",
        f"**Versions:** {versions or tables.DASH}",
        "",
    ]
    if result.robustness is not None and (costs := tables.cost_rows(result.robustness)):
        header = ["Attack", "ε", "Samples", "Forward", "Backward", "Floor (fwd / bwd)", "Spent / floor", "Time"]
        header.append("Share")
        rows = [
            (md_text(c.attack), c.eps, c.samples, c.forward, c.backward, c.floor, c.overhead, c.seconds, c.share)
            for c in costs
        ]
        out += ["**Where the attack time went** (floor: what a perfect per-sample early stop would spend)", ""]
        out += _table(header, rows, [False, *([True] * 8)])
        out += [""]
    return "\n".join(out)
