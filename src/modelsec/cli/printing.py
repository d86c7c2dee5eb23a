"""What the commands print to the terminal: an audit's summary tables, a comparison, a DP audit, the run list."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click


def audit_summary(r: Any) -> None:
    """The verdict, the robustness table (each attack and the worst case per eps) and the membership table."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    colour = {"ok": "green", "warning": "yellow", "fail": "red"}[r.verdict.level]
    console.print(f"[bold {colour}]{r.verdict.level.upper()}[/]: {r.verdict.headline}")
    if r.robustness is not None:
        t = Table(title=f"Robustness (n={r.robustness.n}, clean {r.robustness.clean_accuracy:.1%})")
        for col in ("attack", "norm", "eps", "robust acc.", "95% CI"):
            t.add_column(col)
        for e in r.robustness.results:
            t.add_row(e.attack, e.norm, f"{e.eps:g}", f"{e.robust_accuracy:.1%}", f"[{e.ci_low:.1%}, {e.ci_high:.1%}]")
        for key, acc in r.robustness.robust_accuracy.items():
            ci = r.robustness.robust_ci[key]
            t.add_row(
                "[bold]worst case[/]", r.settings["norm"], key, f"[bold]{acc:.1%}[/]", f"[{ci.low:.1%}, {ci.high:.1%}]"
            )
        console.print(t)
        for f in r.robustness.flags:
            console.print(f"[yellow]check {f.check}[/]: {f.message}")
    if r.privacy is not None:
        t = Table(title="Membership inference (members positive)")
        for col in ("attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR", "advantage"):
            t.add_column(col)
        for a in r.privacy.attacks:
            t.add_row(
                a.attack,
                f"{a.auc:.3f} [{a.auc_ci.low:.3f}, {a.auc_ci.high:.3f}]",
                f"{a.tpr_at_fpr['0.001']:.2%}",
                f"{a.tpr_at_fpr['0.01']:.2%}",
                f"{a.advantage:.3f}",
            )
        console.print(t)


def comparison(c: Any) -> None:
    """One row per model, the flags that make a model's robustness doubtful, and the recommendation."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)  # pipes: wide enough for a row per model
    t = Table(title=f"Comparison (baseline {c.baseline})")
    eps = c.eps_keys
    for col in ("model", "defense", "clean", *(f"robust {k}" for k in eps), "AUC", "TPR@0.1%", "verdict"):
        t.add_column(col, overflow="fold")
    for m in c.models:
        t.add_row(
            m.name,
            m.defense or "-",
            "-" if m.clean_accuracy is None else f"{m.clean_accuracy:.1%}",
            *("-" if (r := m.robust_at(k)) is None else f"{r:.1%}" for k in eps),
            "-" if m.mia_auc is None else f"{m.mia_auc:.3f}",
            "-" if m.mia_tpr is None else f"{m.mia_tpr:.2%}",
            m.verdict_level + ("*" if m.robustness_overestimated else ""),
        )
    console.print(t)
    for m in c.models:
        if m.robustness_overestimated:
            console.print(f"* {m.name}: robustness likely overestimated ({', '.join(m.flags)})")
    for line in c.recommendation.outcome():
        console.print(f"[bold]{line}[/]")


def dp_audit(result: Any) -> None:
    """The claim, the accountants and the empirical lower bound of a one-run DP audit."""
    claimed = "none" if result.claimed_epsilon is None else f"{result.claimed_epsilon:.4f} ({result.accountant})"
    others = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.epsilons.items()) if v is not None)
    click.echo(f"claimed epsilon: {claimed}" + (f"; accountants: {others}" if others else ""))
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
    from rich.table import Table

    t = Table()
    for col in header:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*row)
    Console().print(t)
