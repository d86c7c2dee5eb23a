"""What the commands print to the terminal: an audit's summary tables, a comparison, a DP audit, the run list,
a policy's rules, a run diff."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from modelsec.core.errors import printable


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], **column: Any) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col, **column)
    for row in rows:
        t.add_row(*row)
    return t


def audit_summary(r: Any) -> None:
    """The verdict, the robustness table (each attack and the worst case per eps) and the membership table."""
    from rich.console import Console

    console = Console(stderr=False)
    colour = {"ok": "green", "warning": "yellow", "fail": "red"}[r.verdict.level]
    console.print(f"[bold {colour}]{r.verdict.level.upper()}[/]: {r.verdict.headline}")
    if (rob := r.robustness) is not None:
        rows = [(e.attack, e.norm, f"{e.eps:g}", f"{e.robust_accuracy:.1%}", f"[{e.ci_low:.1%}, {e.ci_high:.1%}]")
                for e in rob.results]  # fmt: skip
        for key, acc in rob.robust_accuracy.items():
            ci, norm = rob.robust_ci[key], r.settings["norm"]
            rows.append(("[bold]worst case[/]", norm, key, f"[bold]{acc:.1%}[/]", f"[{ci.low:.1%}, {ci.high:.1%}]"))
        title = f"Robustness (n={rob.n}, clean {rob.clean_accuracy:.1%})"
        console.print(_table(title, ("attack", "norm", "eps", "robust acc.", "95% CI"), rows))
        for f in rob.flags:
            console.print(f"[yellow]check {f.check}[/]: {f.message}")
        from modelsec.report.tables import probe_notes

        for note in probe_notes(rob):
            console.print(note, markup=False, highlight=False)
        time_breakdown(rob, r.timings, console)
    if r.privacy is not None:
        columns = ("attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR", "advantage")
        rows = [(a.attack, f"{a.auc:.3f} [{a.auc_ci.low:.3f}, {a.auc_ci.high:.3f}]", f"{a.tpr_at_fpr['0.001']:.2%}",
                 f"{a.tpr_at_fpr['0.01']:.2%}", f"{a.advantage:.3f}") for a in r.privacy.attacks]  # fmt: skip
        console.print(_table("Membership inference (members positive)", columns, rows))
        if (recipe := r.privacy.reference_recipe) and recipe.get("guessed"):
            from rich.markup import escape

            from modelsec.report.tables import recipe_notice

            notice = recipe_notice(r.privacy)
            assert notice is not None
            console.print(f"[yellow]reference models' recipe guessed[/]: {escape(notice.text)}", highlight=False)
            for guess in notice.guesses:
                console.print(f"  guessed: {guess}", markup=False, highlight=False)
            console.print(f"  how to set it: {notice.how_to_set}", markup=False, highlight=False)


# Lines of the time breakdown after an audit (the slowest attack runs; the report has them all).
TIME_LINES = 5


def time_breakdown(rob: Any, timings: dict[str, float], console: Any) -> None:
    """Where the time went: each stage of the audit (data, model, robustness, sanity checks, membership with its
    reference models), then the slowest attack runs, each with its share of the attacks' time, the samples it
    attacked and its passes against their floor (what a perfect per-sample early stop would spend)."""
    from modelsec.report.tables import cost_rows, duration

    stages = [(k, v) for k, v in timings.items() if k != "total"]
    if stages:
        total = f" ({duration(timings['total'])} in all)" if "total" in timings else ""
        parts = ", ".join(f"{k.replace('_', ' ')} {duration(v)}" for k, v in stages)
        console.print(f"Stages{total}: {parts}", markup=False, highlight=False)
    rows = sorted(cost_rows(rob), key=lambda c: -c.raw_seconds)
    if not rows:
        return
    spent = sum(c.raw_seconds for c in rows)
    total = f" of {duration(timings['total'])} in all" if "total" in timings else ""
    console.print(f"Where the time went (attacks {duration(spent)}{total}):", highlight=False)
    for c in rows[:TIME_LINES]:
        eps = "minimum-norm pass" if c.eps == "min-norm" else f"eps {c.eps}"
        console.print(
            f"  {c.attack} {eps}: {c.seconds} ({c.share}), {c.samples} samples, {c.forward} forward / {c.backward} "
            f"backward passes, {c.overhead} the floor",
            markup=False,
            highlight=False,
        )
    if len(rows) > TIME_LINES:
        console.print(f"  ... {len(rows) - TIME_LINES} more in the report's run section", highlight=False)


def comparison(c: Any) -> None:
    """One row per model, the flags that make a model's robustness doubtful, and the recommendation."""
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 120)  # pipes: wide enough for a row per model
    columns = ("model", "defense", "clean", *(f"robust {k}" for k in c.eps_keys), "AUC", "TPR@0.1%", "verdict")
    rows = [
        (
            m.name,
            m.defense or "-",
            "-" if m.clean_accuracy is None else f"{m.clean_accuracy:.1%}",
            *("-" if (r := m.robust_at(k)) is None else f"{r:.1%}" for k in c.eps_keys),
            "-" if m.mia_auc is None else f"{m.mia_auc:.3f}",
            "-" if m.mia_tpr is None else f"{m.mia_tpr:.2%}",
            m.verdict_level + ("*" if m.robustness_overestimated else ""),
        )
        for m in c.models
    ]
    console.print(_table(f"Comparison (baseline {c.baseline})", columns, rows, overflow="fold"))
    for m in c.models:
        if m.robustness_overestimated:
            console.print(f"* {m.name}: robustness likely overestimated ({', '.join(m.flags)})")
    for line in c.recommendation.outcome():
        console.print(f"[bold]{line}[/]")


def dp_audit(result: Any) -> None:
    """The claim, the accountants and the empirical lower bound of a one-run DP audit; for one of several runs,
    each run's bound and claim, then the combined bound."""
    claimed = "none" if result.claimed_epsilon is None else f"{result.claimed_epsilon:.4f} ({result.accountant})"
    others = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.epsilons.items()) if v is not None)
    click.echo(f"claimed epsilon: {claimed}" + (f"; accountants: {others}" if others else ""))
    if result.runs:
        for run in result.runs:
            claim = "no claim" if run.claimed_epsilon is None else f"claimed {run.claimed_epsilon:.4f}"
            click.echo(
                f"run {run.index} (seed {run.seed}): lower bound {run.lower_bound:.4f} at {run.level:.2%} from "
                f"{run.v}/{run.r} correct guesses, {run.included} included; {claim}; training {run.train_seconds:.1f} s"
            )
        click.echo(
            f"combined lower bound: {result.lower_bound:.4f} (run {result.evidence_run}'s; the largest of "
            f"{result.run_count} runs' bounds, {1 - result.beta:.0%} together) on {result.canaries} "
            f"{result.canary_kind} canaries a run; training {result.train_seconds:.1f} s in all"
        )
        return
    click.echo(
        f"empirical lower bound: {result.lower_bound:.4f} from {result.v}/{result.r} correct guesses "
        f"({result.k_plus} in, {result.k_minus} out) on {result.canaries} {result.canary_kind} canaries "
        f"({result.included} included); training {result.train_seconds:.1f} s"
    )


def runs(items: Sequence[Any], store_path: Path) -> None:
    """The run store's runs: a table on a terminal, tab-separated lines for pipes and scripts."""
    if not items:
        click.echo(f"no runs recorded in {store_path}")
        return
    rows = [
        (s.id, s.created_at, s.kind, Path(s.model_path or "-").name, s.data_name or "-", s.verdict_level or "-",
         s.out_dir or "-")
        for s in items
    ]  # fmt: skip
    header = ("id", "created", "kind", "model", "data", "verdict", "out")
    if not sys.stdout.isatty():
        for row in (header, *rows):
            click.echo("\t".join(row))
        return
    from rich.console import Console

    Console().print(_table(None, header, rows, overflow="fold"))


def policy_audit(r: Any) -> None:
    """A policy audit's verdict, then per eps each attack's mean return with its CI, steps attacked, actions
    changed (discrete policies) and queries, and the worst case."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=None if sys.stdout.isatty() else 120)
    colour = {"ok": "green", "warning": "yellow", "fail": "red"}[r.verdict.level]
    console.print(f"[bold {colour}]{r.verdict.level.upper()}[/]: {escape(r.verdict.headline)}")
    clean = r.clean
    rows = [("-", "clean", f"{clean.mean_return:.1f}", f"[{clean.ci.low:.1f}, {clean.ci.high:.1f}]", "-", "-", "-")]
    for e in r.eps:
        for a in (a for a in r.results if a.eps == e):
            changed = "-" if a.changed_fraction is None else f"{a.changed_fraction:.1%}"
            rows.append((f"{e:g}", a.attack, f"{a.mean_return:.1f}", f"[{a.ci.low:.1f}, {a.ci.high:.1f}]",
                         f"{a.attacked_fraction:.1%}", changed, f"{a.mean_queries:.0f}"))  # fmt: skip
        if (w := r.worst_at(e)) is not None:
            rows.append((f"{e:g}", "[bold]worst case[/]", f"[bold]{w.mean_return:.1f}[/]",
                         f"[{w.ci.low:.1f}, {w.ci.high:.1f}]", "", "", ""))  # fmt: skip
    title = f"{escape(r.env_id)}: mean return over {r.episodes} episodes ({r.norm}, eps in standard deviations)"
    header = ("eps", "attack", "mean return", "95% CI", "steps attacked", "actions changed", "queries/ep.")
    console.print(_table(title, header, rows))
    for s in r.skipped:
        console.print(f"not run: {escape(s.attack)}: {escape(s.reason)}", highlight=False)
    for note in r.notes:
        console.print(f"[yellow]note[/]: {escape(note)}", highlight=False)


def policy_comparison(c: Any) -> None:
    """One row per policy (clean return, worst case at each eps, training time) and the recommendation."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=None if sys.stdout.isatty() else 120)
    columns = ("policy", "defense", "training", "clean", *(f"attacked {k}" for k in c.eps_keys), "verdict")
    rows = [
        (
            escape(p.name),
            escape(p.defense or "-"),
            "-" if p.training_seconds is None else f"{p.training_seconds:.0f} s",
            f"{p.clean_return:.1f}",
            *("-" if (w := p.worst_at(k)) is None else f"{w:.1f}" for k in c.eps_keys),
            p.verdict_level,
        )
        for p in c.policies
    ]
    console.print(_table(f"{escape(c.env_id)}: policies (baseline {escape(c.baseline)})", columns, rows,
                         overflow="fold"))  # fmt: skip
    for line in c.recommendation.outcome():
        console.print(f"[bold]{escape(line)}[/]")


def gate(outcome: Any, model: str | None = None) -> None:
    """Each rule of the gate's ``outcome``: PASS or FAIL, the measured value with its interval, the threshold;
    ``model``: the compared model the outcome is that of."""
    of = "" if model is None else f" for {model}"
    for rule in outcome.rules:
        mark = click.style("PASS", fg="green") if rule.passed else click.style("FAIL", fg="red", bold=True)
        click.echo(f"{mark} {rule.rule}{of}: {rule.message}")
    n, failed = len(outcome.rules), len(outcome.failed)
    if failed:
        click.secho(
            f"policy FAILED{of}: {failed} of {n} rules failed ({outcome.policy})", fg="red", bold=True, err=True
        )
    else:
        click.secho(f"policy passed{of}: {n} of {n} rules ({outcome.policy})", fg="green")


def run_diff(d: Any) -> None:
    """A run diff as aligned plain-text tables (readable in a terminal, a CI log and a pipe alike)."""

    def pct(v: float | None, ci: Any = None) -> str:
        if v is None:
            return "-"
        return f"{v:.1%}" + ("" if ci is None else f" [{ci.low:.1%}, {ci.high:.1%}]")

    def auc(v: float | None, ci: Any = None) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" + ("" if ci is None else f" [{ci.low:.3f}, {ci.high:.3f}]")

    def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for r in (header, *rows):
            click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    click.echo(f"A: {printable(d.a)} (run {d.run_id_a})")
    click.echo(f"B: {printable(d.b)} (run {d.run_id_b})")
    clean = "changed" if d.clean_changed else "no change"
    click.echo(f"clean accuracy: {pct(d.clean_accuracy_a, d.clean_ci_a)} -> {pct(d.clean_accuracy_b, d.clean_ci_b)}"
               f" ({clean})")  # fmt: skip
    if d.robustness:
        click.echo(
            f"robustness (worst case per sample; McNemar exact two-sided, significant at p < {d.significance:g}):"
        )
        rows = [
            (f"{r.eps:g}", pct(r.robust_accuracy_a, r.ci_a), pct(r.robust_accuracy_b, r.ci_b),
             "-" if r.b is None else str(r.b), "-" if r.c is None else str(r.c),
             "-" if r.p_value is None else f"{r.p_value:.3g}",
             r.note or ("significant" if r.significant else "no significant change"))
            for r in d.robustness
        ]  # fmt: skip
        table(("eps", "robust acc. A", "robust acc. B", "b", "c", "p", ""), rows)
    if d.membership:
        click.echo("membership (changed: the 95% intervals do not overlap; conservative, not a test):")
        members: list[tuple[Any, ...]] = [
            (m.attack, auc(m.auc_a, m.auc_ci_a), auc(m.auc_b, m.auc_ci_b), pct(m.tpr_a, m.tpr_ci_a),
             pct(m.tpr_b, m.tpr_ci_b), "changed" if m.changed else "no change")
            for m in d.membership
        ]  # fmt: skip
        table(("attack", "AUC A", "AUC B", "TPR@0.1%FPR A", "TPR@0.1%FPR B", ""), members)
    for note in d.notes:
        click.echo(f"note: {note}")
    click.echo("changed" if d.changed else "no change detected")
