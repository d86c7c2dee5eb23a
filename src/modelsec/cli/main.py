"""``modelsec`` command line.

Exit codes: 0 success, 2 user error (bad input, unsafe model, unknown name: a message, no traceback),
1 internal error (a bug: the traceback is printed), 3 a privacy claim contradicted (``audit-dp``: the empirical
epsilon lower bound exceeds the claimed epsilon), 130 interrupted.
"""

from __future__ import annotations

import io
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import click

from modelsec.core.errors import ConfigError, DataError, ModelsecError, printable
from modelsec.core.options import SEED_LIMIT, SPLIT_SEED_LIMIT, check_device, check_writable_file, check_writable_folder
from modelsec.core.version import __version__

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_PRIVACY_VIOLATION = 3
"""``audit-dp``: the one-run audit's lower bound exceeds the claimed epsilon (the claim is not delivered)."""

# Option types checked by click as the command line is parsed, before anything is imported or loaded; the
# workflows and config dataclasses check the same values again for the Python API (modelsec.core.options).
SEED = click.IntRange(0, SEED_LIMIT - 1)
SPLIT_SEED = click.IntRange(0, SPLIT_SEED_LIMIT - 1)
COUNT = click.IntRange(min=1)


def _writable_folder(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--out folders: writable (the workflows check again, for the Python API), refused as the line is parsed."""
    check_writable_folder(value)
    return value


def _writable_file(ctx: click.Context, param: click.Parameter, value: str) -> str:
    check_writable_file(value)
    return value


def _parse_names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list of names (None stays None: the default plan)."""
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _parse_floats(value: str, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {value!r}") from None
    if not out:
        raise ConfigError(f"{what} is empty")
    return out


def _parse_bounds(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    b = _parse_floats(value, "--bounds")
    if len(b) != 2 or not b[0] < b[1]:
        raise ConfigError(f"--bounds must be LO,HI with LO < HI, got {value!r}")
    return (b[0], b[1])


def _progress(quiet: bool) -> Any:
    from modelsec.core.progress import RichProgress

    return RichProgress(quiet=quiet)


def _store(path: str | None, disabled: bool, *, readonly: bool = False) -> Any:
    """The run store (``None`` with ``--no-store``); ``readonly`` for commands that only read it, which never
    create a store or its folder."""
    if disabled:
        return None
    from modelsec.store import RunStore, default_store_path

    return RunStore(Path(path) if path else default_store_path(), readonly=readonly)


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
device_option = click.option(
    "--device",
    default="cpu",
    show_default=True,
    callback=lambda ctx, param, value: check_device(value),
    help="Where models run: cpu, or cuda (cuda:N) when one is present.",
)
store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite run store (default: $MODELSEC_STORE or ~/.local/share/modelsec/runs.sqlite).",
)
data_options = [
    click.option(
        "--data-dir",
        default=None,
        help="Folder of the Fashion-MNIST IDX files "
        "(default: $MODELSEC_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist).",
    ),
    click.option("--label-column", default="label", show_default=True, help="Label column of a CSV data file."),
    click.option("--bounds", default=None, help="Valid input range LO,HI of a data file (default 0,1)."),
    click.option(
        "--split-seed",
        type=SPLIT_SEED,
        default=None,
        help="Seed of the member/non-member/population split (default: the model's record, or 0).",
    ),
]


def with_data_options(f: Any) -> Any:
    for option in reversed(data_options):
        f = option(f)
    return f


# The options that set an AuditConfig, shared by `audit` and `compare` (see _audit_config).
audit_options = [
    click.option(
        "--samples", type=COUNT, default=1000, show_default=True, help="Test records attacked for robustness."
    ),
    click.option(
        "--mia-samples",
        type=COUNT,
        default=10000,
        show_default=True,
        help="Members, and as many non-members, scored for membership inference (at most; fewer if the data has "
        "fewer).",
    ),
    click.option(
        "--membership-attacks",
        default=None,
        help="Membership attacks, comma-separated (see `modelsec list`). Default: every one the model and the "
        "reference models allow.",
    ),
    click.option(
        "--reference-models",
        type=int,
        default=0,
        show_default=True,
        help="Reference models to train for LiRA, RMIA and the shadow-model attack (each costs a training run; "
        "they train in parallel and are cached in the run store). 0: only attacks that need none.",
    ),
    click.option(
        "--reference-mode",
        type=click.Choice(["online", "offline"]),
        default="online",
        show_default=True,
        help="online: reference models also train on the audited records (online and offline attacks); "
        "offline: only on population data (offline attacks).",
    ),
    click.option(
        "--reference-epochs", type=COUNT, default=None, help="Reference models' epochs (default: the target's recipe)."
    ),
    click.option(
        "--workers",
        type=COUNT,
        default=None,
        help="Processes training reference models (default: one per CPU core, at most one per model).",
    ),
    click.option("--eps", default="0.03,0.1", show_default=True, help="Perturbation budgets, comma-separated."),
    click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True),
    click.option(
        "--preset",
        type=click.Choice(["quick", "standard", "thorough"]),
        default="standard",
        show_default=True,
        help="quick: APGD (12 steps) + FGSM; standard: AutoAttack-like APGD-CE, APGD-T, DeepFool, Square; "
        "thorough: more of all.",
    ),
    click.option("--attacks", default=None, help="Explicit evasion attacks, comma-separated (overrides --preset)."),
    click.option("--pgd-steps", type=COUNT, default=20, show_default=True, help="PGD steps when named in --attacks."),
    click.option(
        "--pgd-restarts", type=COUNT, default=1, show_default=True, help="PGD restarts when named in --attacks."
    ),
    click.option("--no-checks", is_flag=True, help="Skip the robustness sanity checks."),
    click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of every random choice of the audit."),
]


def with_audit_options(f: Any) -> Any:
    for option in reversed(audit_options):
        f = option(f)
    return f


def _audit_config(split_seed: int | None, options: dict[str, Any]) -> Any:
    """The AuditConfig of the `audit_options` values (``options``, by parameter name) and ``--split-seed``."""
    from modelsec.audits import AuditConfig

    o = dict(options)
    return AuditConfig(
        eps=_parse_floats(o.pop("eps"), "--eps"),
        norm=o.pop("norm"),
        samples=o.pop("samples"),
        mia_samples=o.pop("mia_samples"),
        membership_attacks=_parse_names(o.pop("membership_attacks")),
        reference_models=o.pop("reference_models"),
        reference_mode=o.pop("reference_mode"),
        reference_epochs=o.pop("reference_epochs"),
        workers=o.pop("workers"),
        preset=o.pop("preset"),
        attacks=_parse_names(o.pop("attacks")),
        pgd_steps=o.pop("pgd_steps"),
        pgd_restarts=o.pop("pgd_restarts"),
        seed=o.pop("seed"),
        split_seed=split_seed,
        checks=not o.pop("no_checks"),
        **o,
    )


no_store_option = click.option("--no-store", is_flag=True, help="Do not record the run in the run store.")
no_resume_audit_option = click.option(
    "--no-resume",
    is_flag=True,
    help="Ignore (and replace) the checkpoints an interrupted run left (OUT/audit.ckpt, compare: "
    "OUT/<model>/audit.ckpt); by default the same command resumes from them.",
)
trust_model_option = click.option(
    "--trust-model",
    is_flag=True,
    help="Allow pickle-based model files (read with weights_only=True). Only for files you trust.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="modelsec")
def cli() -> None:
    """Audit trained classifiers for adversarial robustness and training-data leakage."""


@cli.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Model file: safetensors (+ --arch), torch.export .pt2, or a torch.save file with "
    "--trust-model. Default: the bundled Fashion-MNIST CNN.",
)
@click.option("--arch", default=None, help="Built-in architecture of a weights-only file (see `modelsec list`).")
@click.option(
    "--data",
    default=None,
    help="fashion-mnist, digits, breast-cancer, or a .npz/.csv file (default: the model's own data).",
)
@with_data_options
@with_audit_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="modelsec-audit",
    callback=_writable_folder,
    show_default=True,
    help="Folder for result.json, report.html and adversarial.npz.",
)
@store_option
@no_store_option
@no_resume_audit_option
@trust_model_option
@device_option
@quiet_option
def audit(
    model_path: str | None,
    arch: str | None,
    data: str | None,
    data_dir: str | None,
    label_column: str,
    bounds: str | None,
    split_seed: int | None,
    samples: int,
    mia_samples: int,
    membership_attacks: str | None,
    reference_models: int,
    reference_mode: str,
    reference_epochs: int | None,
    workers: int | None,
    eps: str,
    norm: str,
    preset: str,
    attacks: str | None,
    pgd_steps: int,
    pgd_restarts: int,
    no_checks: bool,
    seed: int,
    out_dir: str,
    store_path: str | None,
    no_store: bool,
    no_resume: bool,
    trust_model: bool,
    device: str,
    quiet: bool,
) -> None:
    """Audit a model: evasion attacks (a preset) and membership inference; writes a report. An interrupted audit
    resumes where it stopped when the same command is run again (OUT/audit.ckpt)."""
    from modelsec.audits import AuditConfig
    from modelsec.outputs.audit import audit_and_write

    config = AuditConfig(
        eps=_parse_floats(eps, "--eps"),
        norm=norm,
        samples=samples,
        mia_samples=mia_samples,
        membership_attacks=_parse_names(membership_attacks),
        reference_models=reference_models,
        reference_mode=reference_mode,
        reference_epochs=reference_epochs,
        workers=workers,
        preset=preset,
        attacks=_parse_names(attacks),
        pgd_steps=pgd_steps,
        pgd_restarts=pgd_restarts,
        seed=seed,
        split_seed=split_seed,
        checks=not no_checks,
    )
    store = _store(store_path, no_store)
    progress = _progress(quiet)
    outcome = audit_and_write(
        model_path,
        data,
        config=config,
        arch=arch,
        trust_model=trust_model,
        device=device,
        data_dir=data_dir,
        label_column=label_column,
        bounds=_parse_bounds(bounds),
        out_dir=out_dir,
        store=store,
        progress=progress,
        resume=not no_resume,
    )
    r = outcome.result
    if not quiet:
        _print_summary(r)
        click.echo(f"report: {outcome.files['report']}\nresult: {outcome.files['result']}\nrun id: {r.run_id}")


def _print_summary(r: Any) -> None:
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


@cli.command()
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("hardened", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--data",
    default=None,
    help="fashion-mnist, digits, breast-cancer, or a .npz/.csv file (default: the baseline's own data).",
)
@with_data_options
@with_audit_options
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=5.0,
    show_default=True,
    help="The recommendation rule's N: only models at most N percentage points of clean accuracy below the "
    "baseline's are recommended.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="modelsec-compare",
    callback=_writable_folder,
    show_default=True,
    help="Folder for comparison.html/.json/.md and one audit folder per model.",
)
@store_option
@no_store_option
@no_resume_audit_option
@trust_model_option
@device_option
@quiet_option
def compare(
    baseline: str,
    hardened: tuple[str, ...],
    data: str | None,
    data_dir: str | None,
    label_column: str,
    bounds: str | None,
    split_seed: int | None,
    max_accuracy_drop: float,
    out_dir: str,
    store_path: str | None,
    no_store: bool,
    no_resume: bool,
    trust_model: bool,
    device: str,
    quiet: bool,
    **options: Any,
) -> None:
    """Audit BASELINE and each HARDENED model the same way (same settings, seed, test records and membership
    candidates) and write a comparison report with a recommendation."""
    from modelsec.outputs.compare import compare_and_write

    outcome = compare_and_write(
        baseline,
        hardened,
        data=data,
        config=_audit_config(split_seed, options),
        out_dir=out_dir,
        max_accuracy_drop=max_accuracy_drop,
        trust_model=trust_model,
        device=device,
        data_dir=data_dir,
        label_column=label_column,
        bounds=_parse_bounds(bounds),
        store=_store(store_path, no_store),
        progress=_progress(quiet),
        resume=not no_resume,
    )
    if not quiet:
        _print_comparison(outcome.comparison)
        click.echo(f"report: {outcome.files['html']}\nresult: {outcome.files['comparison']}")


def _print_comparison(c: Any) -> None:
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


@cli.command()
@click.option("--arch", default=None, help="Built-in architecture (default: small-cnn for images, mlp otherwise).")
@click.option(
    "--data", default="fashion-mnist", show_default=True, help="Data set name or file; trains on its members split."
)
@with_data_options
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    required=True,
    callback=_writable_file,
    help="Weights file to write (safetensors); metadata goes to OUT.json.",
)
@click.option("--epochs", type=COUNT, default=8, show_default=True)
@click.option("--batch-size", type=COUNT, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True)
@click.option("--members", type=COUNT, default=None, help="Train on only the first N members (default: all).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of initialisation and batch order.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@device_option
@quiet_option
def train(
    arch: str | None,
    data: str,
    data_dir: str | None,
    label_column: str,
    bounds: str | None,
    split_seed: int | None,
    out_path: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    members: int | None,
    lr_schedule: str,
    seed: int,
    overwrite: bool,
    device: str,
    quiet: bool,
) -> None:
    """Train a model on a data set's members split (standard training) and save it as safetensors."""
    from modelsec.defenses.training import TrainingConfig, train_and_save

    config = TrainingConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule, seed=seed
    )
    result = train_and_save(
        data=data,
        arch=arch,
        out=Path(out_path),
        config=config,
        split_seed=split_seed or 0,
        members=members,
        data_dir=data_dir,
        label_column=label_column,
        bounds=_parse_bounds(bounds),
        device=device,
        overwrite=overwrite,
        progress=_progress(quiet),
    )
    if not quiet:
        click.echo(
            f"saved {out_path} ({result['arch']}, test accuracy {result['training']['test_accuracy'][-1]:.2%}) "
            f"and {out_path}.json"
        )


def _harden_config(config_json: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The defense's options: ``--config-json`` (an object), overridden by the per-option flags that were given."""
    config: dict[str, Any] = {}
    if config_json is not None:
        try:
            parsed = json.loads(config_json)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config-json is not valid JSON ({printable(e)})") from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"--config-json must be a JSON object of options, got {config_json!r}")
        config.update(parsed)
    config.update({k: v for k, v in flags.items() if v is not None})
    return config


@cli.command()
@click.option("--defense", required=True, help="Defense by name (see `modelsec list defenses`).")
@click.option(
    "--config-json",
    default=None,
    help='The defense\'s options as a JSON object, e.g. \'{"eps": 0.1, "steps": 7}\'; the flags below override it.',
)
@click.option("--arch", default=None, help="Built-in architecture (default: small-cnn for images, mlp otherwise).")
@click.option(
    "--data", default="fashion-mnist", show_default=True, help="Data set name or file; trains on its members split."
)
@with_data_options
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    required=True,
    callback=_writable_file,
    help="Weights file to write (safetensors); provenance goes to OUT.json, the per-epoch checkpoint to OUT.ckpt.",
)
@click.option("--epochs", type=COUNT, default=None, help="Training epochs (default: the defense's, 8; dp-sgd 10).")
@click.option("--batch-size", type=COUNT, default=None, help="Mini-batch size (default 128; dp-sgd: expected, 256).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: Adam 1e-3; dp-sgd 0.1).")
@click.option("--weight-decay", type=float, default=None, help="Adam weight decay (default 0).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=None, help="Default cosine.")
@click.option("--seed", type=SEED, default=None, help="Seed of initialisation, batch order and attacks (default 0).")
@click.option("--eps", type=float, default=None, help="Adversarial training: the training budget in input units.")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=None, help="Adversarial training: default linf.")
@click.option("--steps", type=int, default=None, help="PGD-AT / TRADES: steps of the inner attack.")
@click.option("--step-size", type=float, default=None, help="Adversarial training: inner attack step (input units).")
@click.option("--beta", type=float, default=None, help="TRADES: weight of the robustness term (default 6).")
@click.option("--eps-warmup-epochs", type=int, default=None, help="Adversarial training: grow eps over N epochs.")
@click.option("--l2-norm-clip", type=float, default=None, help="dp-sgd: per-example clipping bound C (default 1).")
@click.option("--noise-multiplier", type=float, default=None, help="dp-sgd: noise std in units of C (default 1.1).")
@click.option("--target-epsilon", type=float, default=None, help="dp-sgd: derive the noise multiplier from it.")
@click.option("--delta", type=float, default=None, help="dp-sgd: delta of the claim (default 1e-5, < 1/n).")
@click.option("--num-microbatches", type=int, default=None, help="dp-sgd: unset or = batch size (per example).")
@click.option("--optimizer", default=None, help="dp-sgd: sgd (default, with --momentum) or adam.")
@click.option("--momentum", type=float, default=None, help="dp-sgd: SGD momentum (default 0.9).")
@click.option("--grad-sample-mode", default=None, help="dp-sgd: ghost (default; falls back to hooks) or hooks.")
@click.option("--batchnorm", default=None, help="dp-sgd: replace (GroupNorm, default) or refuse.")
@click.option("--temperature", type=float, default=None, help="distillation, dmp: softmax temperature T.")
@click.option(
    "--teacher-epochs", type=COUNT, default=None, help="distillation, dmp: teacher epochs (default: --epochs)."
)
@click.option("--members", type=COUNT, default=None, help="Train on only the first N members (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--no-resume", is_flag=True, help="Ignore (and replace) a checkpoint OUT.ckpt left by an earlier run.")
@click.option(
    "--base",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="output-hardening: harden this trained model file (safetensors) instead of training; --data, --arch unused.",
)
@device_option
@quiet_option
def harden(
    defense: str,
    config_json: str | None,
    arch: str | None,
    data: str,
    data_dir: str | None,
    label_column: str,
    bounds: str | None,
    split_seed: int | None,
    out_path: str,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    weight_decay: float | None,
    lr_schedule: str | None,
    seed: int | None,
    eps: float | None,
    norm: str | None,
    steps: int | None,
    step_size: float | None,
    beta: float | None,
    eps_warmup_epochs: int | None,
    l2_norm_clip: float | None,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float | None,
    num_microbatches: int | None,
    optimizer: str | None,
    momentum: float | None,
    grad_sample_mode: str | None,
    batchnorm: str | None,
    temperature: float | None,
    teacher_epochs: int | None,
    members: int | None,
    overwrite: bool,
    no_resume: bool,
    base: str | None,
    device: str,
    quiet: bool,
) -> None:
    """Train a model with a defense (adversarial training, DP-SGD, ...) and save it as safetensors with its provenance.

    Resumable: after each epoch a checkpoint OUT.ckpt is written; rerunning the same command
    continues from it.
    """
    from modelsec.defenses import harden as run_harden
    from modelsec.defenses import make_defense

    flags = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "lr_schedule": lr_schedule,
        "seed": seed,
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "step_size": step_size,
        "beta": beta,
        "eps_warmup_epochs": eps_warmup_epochs,
        "l2_norm_clip": l2_norm_clip,
        "noise_multiplier": noise_multiplier,
        "target_epsilon": target_epsilon,
        "delta": delta,
        "num_microbatches": num_microbatches,
        "optimizer": optimizer,
        "momentum": momentum,
        "grad_sample_mode": grad_sample_mode,
        "batchnorm": batchnorm,
        "temperature": temperature,
        "teacher_epochs": teacher_epochs,
    }
    config = make_defense(defense, _harden_config(config_json, flags)).config  # validated before the data loads
    result = run_harden(
        defense,
        data=data,
        arch=arch,
        out=Path(out_path),
        config=config,
        split_seed=split_seed or 0,
        members=members,
        data_dir=data_dir,
        label_column=label_column,
        bounds=_parse_bounds(bounds),
        device=device,
        progress=_progress(quiet),
        overwrite=overwrite,
        resume=not no_resume,
        base=base,
    )
    if result["stop_reason"]:
        click.echo(f"stopped early: {result['stop_reason']}", err=True)
    if not quiet:
        test_accuracy = (result["training"] or {}).get("test_accuracy")  # None: a model hardened without training
        accuracy = f", test accuracy {test_accuracy[-1]:.2%}" if test_accuracy else ""
        click.echo(
            f"saved {out_path} ({result['defense']['name']}, {result['arch']}{accuracy}; "
            f"{result['guarantees']['summary']}) and {out_path}.json"
        )


@cli.command("audit-dp")
@click.option(
    "--defense",
    default="dp-sgd",
    show_default=True,
    help="The training under audit, by defense name (see `modelsec list defenses`); standard: non-private.",
)
@click.option("--config-json", default=None, help="The defense's options as JSON; the flags below override it.")
@click.option("--arch", default=None, help="Built-in architecture (default: small-cnn for images, mlp otherwise).")
@click.option(
    "--data", default="fashion-mnist", show_default=True, help="Data set name or file; trains on its members split."
)
@with_data_options
@click.option("--canaries", type=COUNT, default=1000, show_default=True, help="Canaries, each included with p = 1/2.")
@click.option(
    "--canary-kind",
    type=click.Choice(["mislabelled", "out-of-distribution"]),
    default="mislabelled",
    show_default=True,
    help="mislabelled: population records with a wrong label; out-of-distribution: noise inputs, random labels.",
)
@click.option(
    "--score",
    type=click.Choice(["scaled-logit", "loss"]),
    default="scaled-logit",
    show_default=True,
    help="Membership score of a canary's label (both rank alike).",
)
@click.option(
    "--correction",
    type=click.Choice(["none", "bonferroni"]),
    default="none",
    show_default=True,
    help="none: best over the numbers of guesses, as the paper; bonferroni: corrected for trying them.",
)
@click.option("--epochs", type=COUNT, default=None, help="Training epochs (default: the defense's; dp-sgd 10).")
@click.option("--batch-size", type=COUNT, default=None, help="Mini-batch size (dp-sgd: expected, default 256).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: Adam 1e-3; dp-sgd 0.1).")
@click.option("--weight-decay", type=float, default=None, help="Adam weight decay (default 0).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=None, help="Default cosine.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the canaries and of the training run.")
@click.option("--l2-norm-clip", type=float, default=None, help="dp-sgd: per-example clipping bound C (default 1).")
@click.option("--noise-multiplier", type=float, default=None, help="dp-sgd: noise std in units of C (default 1.1).")
@click.option("--target-epsilon", type=float, default=None, help="dp-sgd: derive the noise multiplier from it.")
@click.option("--delta", type=float, default=None, help="dp-sgd: delta of the claim (default 1e-5, < 1/n).")
@click.option("--num-microbatches", type=int, default=None, help="dp-sgd: unset or = batch size (per example).")
@click.option("--optimizer", default=None, help="dp-sgd: sgd (default, with --momentum) or adam.")
@click.option("--momentum", type=float, default=None, help="dp-sgd: SGD momentum (default 0.9).")
@click.option("--grad-sample-mode", default=None, help="dp-sgd: ghost (default; falls back to hooks) or hooks.")
@click.option("--batchnorm", default=None, help="dp-sgd: replace (GroupNorm, default) or refuse.")
@click.option("--members", type=COUNT, default=None, help="Train on only the first N members (default: all).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="modelsec-dp-audit",
    callback=_writable_folder,
    show_default=True,
    help="Folder for dp_audit.json and dp_audit.html.",
)
@device_option
@quiet_option
def audit_dp(
    defense: str,
    config_json: str | None,
    arch: str | None,
    data: str,
    data_dir: str | None,
    label_column: str,
    bounds: str | None,
    split_seed: int | None,
    canaries: int,
    canary_kind: str,
    score: str,
    correction: str,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    weight_decay: float | None,
    lr_schedule: str | None,
    seed: int,
    l2_norm_clip: float | None,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float | None,
    num_microbatches: int | None,
    optimizer: str | None,
    momentum: float | None,
    grad_sample_mode: str | None,
    batchnorm: str | None,
    members: int | None,
    out_dir: str,
    device: str,
    quiet: bool,
) -> None:
    """Check a DP claim with one training run (Steinke, Nasr & Jagielski 2023): train with canaries, bound epsilon.

    Exits 3, with a red verdict, when the empirical lower bound exceeds the claimed epsilon (the training does not
    deliver its claim: a bug, not a result); 0 otherwise, also for a run without a claim (the bound is reported).
    """
    from modelsec.defenses import make_defense
    from modelsec.outputs.dp_audit import dp_audit_and_write

    flags = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "lr_schedule": lr_schedule,
        "seed": seed,
        "l2_norm_clip": l2_norm_clip,
        "noise_multiplier": noise_multiplier,
        "target_epsilon": target_epsilon,
        "delta": delta,
        "num_microbatches": num_microbatches,
        "optimizer": optimizer,
        "momentum": momentum,
        "grad_sample_mode": grad_sample_mode,
        "batchnorm": batchnorm,
    }
    config = make_defense(defense, _harden_config(config_json, flags)).config  # validated before the data loads
    result, files = dp_audit_and_write(
        defense,
        data=data,
        arch=arch,
        config=config,
        canaries=canaries,
        canary_kind=canary_kind,
        seed=seed,
        score=score,
        correction=correction,
        members=members,
        split_seed=split_seed or 0,
        data_dir=data_dir,
        label_column=label_column,
        bounds=_parse_bounds(bounds),
        out_dir=out_dir,
        device=device,
        progress=_progress(quiet),
    )
    if not quiet:
        claimed = "none" if result.claimed_epsilon is None else f"{result.claimed_epsilon:.4f} ({result.accountant})"
        others = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.epsilons.items()) if v is not None)
        click.echo(f"claimed epsilon: {claimed}" + (f"; accountants: {others}" if others else ""))
        click.echo(
            f"empirical lower bound: {result.lower_bound:.4f} from {result.v}/{result.r} correct guesses "
            f"({result.k_plus} in, {result.k_minus} out) on {result.canaries} {result.canary_kind} canaries "
            f"({result.included} included); training {result.train_seconds:.1f} s"
        )
        click.echo(f"report: {files['report']}\nresult: {files['result']}")
    if not result.passed:
        click.secho(f"FAIL: {result.verdict()}", fg="red", bold=True, err=True)
        sys.exit(EXIT_PRIVACY_VIOLATION)
    click.secho(("ok: " if result.claimed_epsilon is not None else "") + result.verdict(), fg="green")


@cli.group()
def runs() -> None:
    """Inspect the run store."""


@runs.command("list")
@click.option("--limit", type=COUNT, default=20, show_default=True)
@store_option
def runs_list(limit: int, store_path: str | None) -> None:
    """List recorded runs, newest first."""
    from rich.console import Console
    from rich.table import Table

    store = _store(store_path, False, readonly=True)
    items = store.list_runs(limit=limit)
    if not items:
        click.echo(f"no runs recorded in {store.path}")
        return
    rows = [
        (s.id, s.created_at, s.kind, Path(s.model_path or "-").name, s.data_name or "-", s.verdict_level or "-",
         s.out_dir or "-")
        for s in items
    ]  # fmt: skip
    header = ("id", "created", "kind", "model", "data", "verdict", "out")
    if not sys.stdout.isatty():  # plain, tab-separated lines for pipes and scripts
        for row in (header, *rows):
            click.echo("\t".join(row))
        return
    t = Table()
    for col in header:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*row)
    Console().print(t)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full result JSON.")
@store_option
def runs_show(run_id: str, as_json: bool, store_path: str | None) -> None:
    """Show one run (RUN_ID or a unique prefix of it)."""
    store = _store(store_path, False, readonly=True)
    run = store.get(run_id)
    if as_json:
        click.echo(json.dumps(run.result.to_dict(), indent=2))
        return
    from modelsec.report import render_markdown

    click.echo(render_markdown(run.result))
    for a in run.artifacts:
        click.echo(f"artifact {a.name}: {a.path} (sha256 {a.sha256[:12]})")


@cli.command("report")
@click.argument("result_json", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    required=True,
    callback=_writable_file,
    help="HTML file to write.",
)
def report(result_json: str, out_path: str) -> None:
    """Render report.html again from a result.json."""
    from modelsec.results.audit import AuditResult

    try:
        result = AuditResult.load(result_json)  # DataError naming the field when it is not a result
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{printable(result_json)} is not a modelsec result.json ({printable(e)})") from None
    from modelsec.report import write_html  # after the checks: it imports matplotlib

    write_html(result, out_path)
    click.echo(f"report: {out_path}")


@cli.command("list")
@click.argument("kind", type=click.Choice(["attacks", "architectures", "datasets", "defenses", "all"]), default="all")
def list_plugins(kind: str) -> None:
    """List what the registries hold: attacks, architectures, data sets, defenses."""
    from modelsec.attacks.evasion import EVASION_ATTACKS
    from modelsec.attacks.membership import MEMBERSHIP_ATTACKS
    from modelsec.data import DATASETS
    from modelsec.defenses import DEFENSES
    from modelsec.models.zoo import ARCHITECTURES

    if kind in ("attacks", "all"):
        click.echo("evasion attacks:    " + ", ".join(EVASION_ATTACKS.names()))
        click.echo("membership attacks: " + ", ".join(MEMBERSHIP_ATTACKS.names()))
    if kind in ("architectures", "all"):
        click.echo("architectures:      " + ", ".join(ARCHITECTURES.names()))
    if kind in ("datasets", "all"):
        click.echo("data sets:          " + ", ".join(DATASETS.names()) + " (or a .npz / .csv file)")
    if kind in ("defenses", "all"):
        click.echo("defenses:           " + ", ".join(DEFENSES.names()))


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"modelsec: warning: {printable(message, max_chars=None)}", file=sys.stderr)


def _interrupted(cause: BaseException | None) -> None:
    """Exit 130, saying what the interrupted command left to resume from (an audit's checkpoint) if anything."""
    detail = str(cause) if isinstance(cause, KeyboardInterrupt) and cause.args else ""
    print("modelsec: interrupted" + (f": {detail}" if detail else ""), file=sys.stderr)
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps errors to exit codes (2 user error, 1 bug)."""
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="modelsec", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        _interrupted(e.__cause__)
    except click.ClickException as e:
        shown = io.StringIO()
        e.show(file=shown)  # usage and message, which may quote what was typed: printed line by line, cleaned
        lines = (printable(line, max_chars=None) for line in shown.getvalue().splitlines())
        print("\n".join(line for line in lines if line), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except ModelsecError as e:
        print(f"modelsec: error: {printable(e, max_chars=None)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as e:
        _interrupted(e)
    except Exception:
        traceback.print_exc()
        print(
            "modelsec: internal error (a bug in modelsec; please report it with the traceback above)", file=sys.stderr
        )
        sys.exit(EXIT_INTERNAL_ERROR)


if __name__ == "__main__":
    main()
