"""``modelsec`` command line: parsing, calling the workflows, printing, exit codes; no logic of its own.

The options that set a config (``AuditConfig``, ``TrainingConfig``, every defense's config, ``DPAuditOptions``) are
generated from its fields (:mod:`modelsec.cli.config_options`), so a new field is a new option without touching
this file.

Exit codes: 0 success, 2 user error (bad input, unsafe model, unknown name: a message, no traceback),
1 internal error (a bug: the traceback is printed), 3 a privacy claim contradicted (``audit-dp``: the empirical
epsilon lower bound exceeds the claimed epsilon), 4 the policy failed (``audit``, ``compare`` or ``audit-dp``
with ``--policy FILE``: a rule of the policy file does not hold; the files are written all the same), 130
interrupted.
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

from modelsec.cli import printing
from modelsec.cli.config_options import ConfigCommand, FieldOption, config_options, field_options, parse_floats
from modelsec.core.errors import ConfigError, DataError, ModelsecError, printable
from modelsec.core.options import SPLIT_SEED_LIMIT, check_device, check_writable_file, check_writable_folder
from modelsec.core.version import __version__

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_PRIVACY_VIOLATION = 3
"""``audit-dp``: the one-run audit's lower bound exceeds the claimed epsilon (the claim is not delivered)."""
EXIT_POLICY_FAILED = 4
"""``--policy FILE`` (``audit``, ``compare``, ``audit-dp``): a rule of the policy file failed (the files are written
all the same)."""

COUNT = click.IntRange(min=1)


def _check(check: Any) -> Any:
    """A click callback running ``check(value)`` (a ConfigError) as the line is parsed, before anything is imported
    or loaded; the workflows check again, for the Python API."""
    return lambda ctx, param, value: check(value) or value


def _parse_bounds(value: str | None) -> tuple[float, float] | None:
    b = None if value is None else parse_floats(value, "--bounds")
    if b is not None and (len(b) != 2 or not b[0] < b[1]):
        raise ConfigError(f"--bounds must be LO,HI with LO < HI, got {value!r}")
    return None if b is None else (b[0], b[1])


def _progress(quiet: bool) -> Any:
    from modelsec.core.progress import RichProgress

    return RichProgress(quiet=quiet)


def _store(path: str | None, disabled: bool, *, readonly: bool = False) -> Any:
    """The run store (``None`` with ``--no-store``); ``readonly`` for commands that only read it, which never
    create a store or its folder."""
    from modelsec.store import RunStore, default_store_path

    return None if disabled else RunStore(Path(path) if path else default_store_path(), readonly=readonly)


def _defense_config(defense: str, config_json: str | None, given: dict[str, Any]) -> Any:
    """The defense's validated config (before the data loads): ``--config-json``, overridden by the options given."""
    from modelsec.defenses import make_defense

    try:
        config = {} if config_json is None else json.loads(config_json)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config-json is not valid JSON ({printable(e)})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config-json must be a JSON object of options, got {config_json!r}")
    return make_defense(defense, {**config, **given}).config


# The options generated from the configs' fields, built when a command is parsed (the configs import torch).
def _audit_fields() -> list[FieldOption]:
    from modelsec.audits.runner import AuditConfig

    return field_options({"": AuditConfig}, exclude={"split_seed"})  # --split-seed: a data option


def _training_fields() -> list[FieldOption]:
    from modelsec.defenses.training import TrainingConfig

    return field_options({"": TrainingConfig})


def _defense_fields(exclude: tuple[str, ...] = ()) -> list[FieldOption]:
    """Every field of every registered defense's config, unset by default (the defense's own default applies)."""
    from modelsec.defenses import DEFENSES

    return field_options({n: DEFENSES.get(n).config_class for n in DEFENSES.names()}, unset=True, exclude=exclude)


def _dp_audit_fields() -> list[FieldOption]:
    from modelsec.audits.dp_audit import DPAuditOptions

    return field_options({"": DPAuditOptions})


def _executor_fields() -> list[FieldOption]:
    from modelsec.core.executors import ExecutorConfig

    return field_options({"": ExecutorConfig})


def _policy_audit_fields() -> list[FieldOption]:
    from modelsec.audits.policy_audit import PolicyAuditConfig

    return field_options({"": PolicyAuditConfig}, exclude={"policy", "env"})  # --policy, --env: the command's


def _policy_hardening_fields() -> list[FieldOption]:
    from modelsec.rl.hardening import PolicyHardening

    return field_options({"": PolicyHardening}, unset=True, exclude={"method", "ppo"})


def _ppo_fields() -> list[FieldOption]:
    from modelsec.rl.ppo import PPOConfig

    return field_options({"": PPOConfig}, unset=True, exclude={"total_steps", "hidden"})  # --steps: the command's


def _options(*options: Any) -> Any:
    """One decorator adding ``options`` in this order."""

    def decorator(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorator


def _out_folder(default: str, what: str) -> Any:
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False),
        default=default,
        callback=_check(check_writable_folder),
        show_default=True,
        help=f"Folder for {what}.",
    )


def _out_file(what: str) -> Any:
    path = click.Path(dir_okay=False)
    return click.option("--out", "out_path", type=path, required=True, callback=_check(check_writable_file), help=what)


DEFAULT_TRAINING_DATA = "fashion-mnist"
DATA_HELP = "fashion-mnist, digits, breast-cancer, a .npz/.csv file, or an image folder (FOLDER/<class>/<image>)"
STORE_HELP = "SQLite run store (default: $MODELSEC_STORE or ~/.local/share/modelsec/runs.sqlite)."
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
device_option = click.option(
    "--device",
    default="cpu",
    show_default=True,
    callback=_check(check_device),
    help="Where models run: cpu, or cuda (cuda:N) when one is present.",
)
store_option = click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None, help=STORE_HELP)
members_option = click.option(
    "--members", type=COUNT, default=None, help="Train on only the first N members (default: all)."
)
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
config_json_option = click.option(
    "--config-json",
    default=None,
    help='The defense\'s options as a JSON object, e.g. \'{"eps": 0.1, "steps": 7}\'; the options below override it.',
)
data_options = _options(
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
        type=click.IntRange(0, SPLIT_SEED_LIMIT - 1),
        default=None,
        help="Seed of the member/non-member/population split (default: the model's record, or 0).",
    ),
)
user_split_options = _options(  # audit, compare: the user's own split instead of --data
    click.option(
        "--members",
        "members_file",
        type=click.Path(),
        default=None,
        help="The exact records the model trained on (a .npz/.csv file or an image folder); with --nonmembers, "
        "instead of --data: the membership audit uses exactly these, no split is drawn.",
    ),
    click.option(
        "--nonmembers",
        "nonmembers_file",
        type=click.Path(),
        default=None,
        help="Records the model never trained on (file or image folder); with --members.",
    ),
    click.option(
        "--population",
        "population_file",
        type=click.Path(),
        default=None,
        help="With --members: further records from the same distribution the attacker may use (needed for offline "
        "reference models).",
    ),
    click.option(
        "--test",
        "test_file",
        type=click.Path(),
        default=None,
        help="With --members: held-out records to measure robustness on (default: the non-members).",
    ),
)
run_options = _options(  # audit, compare: after --out
    store_option,
    click.option("--no-store", is_flag=True, help="Do not record the run in the run store."),
    click.option(
        "--no-resume",
        is_flag=True,
        help="Ignore (and replace) the checkpoints an interrupted run left (OUT/audit.ckpt, compare: "
        "OUT/<model>/audit.ckpt); by default the same command resumes from them.",
    ),
    click.option(
        "--trust-model",
        is_flag=True,
        help="Allow pickle-based model files (read with weights_only=True). Only for files you trust.",
    ),
    device_option,
    quiet_option,
)
training_data_options = _options(  # train, harden, audit-dp
    click.option("--arch", default=None, help="Built-in architecture (default: small-cnn for images, mlp otherwise)."),
    click.option(
        "--data",
        default=DEFAULT_TRAINING_DATA,
        show_default=True,
        help="Data set name or file; trains on its members split.",
    ),
    data_options,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="modelsec")
def cli() -> None:
    """Audit trained classifiers for adversarial robustness and training-data leakage."""


def _parse_header(value: str) -> tuple[str, str]:
    name, colon, text = value.partition(":")
    if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
        raise ConfigError(f"--endpoint-header must be 'Name: value', got {printable(value, 60)!r}")
    return name.strip(), text.strip()


endpoint_options = _options(  # audit: a model behind a prediction API (modelsec.models.adapters.endpoint)
    click.option(
        "--endpoint",
        default=None,
        help="URL of a prediction API to audit instead of --model (the protocol: README, 'Your own model: a "
        "prediction API'); needs --data.",
    ),
    click.option("--endpoint-batch-size", type=COUNT, default=None, help="Records per request (default 128)."),
    click.option("--query-budget", type=COUNT, default=None, help="The most records sent in all (default: no limit)."),
    click.option("--endpoint-timeout", type=float, default=None, help="Seconds to wait for an answer (default 30)."),
    click.option(
        "--endpoint-retries",
        type=click.IntRange(min=0),
        default=None,
        help="Retries of a request that timed out, failed to connect or got HTTP 429/5xx (default 3).",
    ),
    click.option(
        "--endpoint-backoff",
        type=float,
        default=None,
        help="Seconds before the first retry, doubled before each next one (default 0.5).",
    ),
    click.option("--rate-limit", type=float, default=None, help="At most this many requests per second."),
    click.option(
        "--endpoint-header",
        "endpoint_headers",
        multiple=True,
        help="A request header 'Name: value' (repeatable), e.g. 'Authorization: Bearer TOKEN'; never recorded.",
    ),
)


def _endpoint_model(model_path: str | None, url: str | None, **given: Any) -> Any:
    """The model behind ``--endpoint`` (:func:`modelsec.models.adapters.endpoint.endpoint`), or ``model_path``."""
    flag = {"endpoint_headers": "--endpoint-header"}
    used = [flag.get(k, "--" + k.replace("_", "-")) for k, v in given.items() if v not in (None, ())]
    if url is None:
        if used:
            raise ConfigError(f"{', '.join(used)} only apply with --endpoint URL")
        return model_path
    if model_path is not None:
        raise ConfigError("give --model or --endpoint, not both")
    from modelsec.models.adapters.endpoint import endpoint

    headers = dict(_parse_header(h) for h in given.pop("endpoint_headers"))
    names = {"endpoint_batch_size": "batch_size", "endpoint_timeout": "timeout", "endpoint_retries": "retries",
             "endpoint_backoff": "backoff"}  # fmt: skip
    options = {names.get(k, k): v for k, v in given.items() if v is not None}
    return endpoint(url, headers=headers, **options)


def _load_policy(ctx: Any, param: Any, value: str | None) -> Any:
    """``--policy FILE``: the policy file parsed and checked (:func:`modelsec.audits.gate.load_gate`) as the
    line is parsed, before any work."""
    if value is None:
        return None
    from modelsec.audits.gate import load_gate

    return load_gate(value)


def _check_junit(value: str | None) -> None:
    if value is not None:
        check_writable_file(value, "--junit")


gate_options = _options(  # audit, compare, audit-dp: the policy gate (issue 17)
    click.option(
        "--policy",
        "gate",
        type=click.Path(dir_okay=False),
        default=None,
        callback=_load_policy,
        help="Policy file (TOML) of rules the result must meet (README, 'Use in CI'); checked before any work. "
        f"Each rule is printed with its outcome; exit code {EXIT_POLICY_FAILED} when one fails.",
    ),
    click.option(
        "--junit",
        "junit_path",
        type=click.Path(dir_okay=False),
        default=None,
        callback=_check(_check_junit),
        help="With --policy: write the rules' outcomes as JUnit XML to this file (one test case per rule).",
    ),
)

policy_options = _options(  # audit: the policy gate and its baseline run
    gate_options,
    click.option(
        "--baseline",
        "baseline_spec",
        default=None,
        metavar="RUN_ID|result.json",
        help="With --policy: the run its baseline rules (max_robust_accuracy_drop) compare with: a result.json with "
        "its adversarial.npz beside it, or a run id in the run store. Read before the audit.",
    ),
)


mlflow_options = _options(  # audit, compare, audit-dp and harden: MLflow tracking (issue 17)
    click.option(
        "--mlflow/--no-mlflow",
        "mlflow",
        default=None,
        help="Log the run to MLflow: params, metrics, the files as artifacts (README, 'MLflow'). Default: on when "
        "$MLFLOW_TRACKING_URI is set. Checked before any work; if logging fails once the files are written, "
        f"exit code {EXIT_USER_ERROR} with the files kept.",
    ),
    click.option(
        "--mlflow-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's own default, sqlite:///mlflow.db). "
        "Implies --mlflow.",
    ),
    click.option(
        "--mlflow-experiment",
        default="modelsec",
        show_default=True,
        metavar="NAME",
        help="MLflow experiment to log to (created if missing).",
    ),
)


def _junit_needs_policy(gate: Any, junit_path: str | None) -> None:
    if junit_path is not None and gate is None:
        raise ConfigError("--junit needs --policy FILE (it writes the policy's rules as test cases)")


def _report_gates(outcomes: dict[str | None, Any], junit_path: str | None) -> bool:
    """Print every gate outcome (by compared model; ``None``: the one result of the command), write them as JUnit
    XML to ``junit_path`` when given; returns whether every rule passed."""
    for model, outcome in outcomes.items():
        printing.gate(outcome, model)
    if junit_path is not None:
        from modelsec.outputs.junit import write_junit

        single = outcomes.get(None)
        write_junit(single if single is not None else {str(k): v for k, v in outcomes.items()}, junit_path)
    return all(o.passed for o in outcomes.values())


@cli.command(cls=ConfigCommand)
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Model file: safetensors (+ --arch), torch.export .pt2, or a torch.save file with "
    "--trust-model. Default: the bundled Fashion-MNIST CNN.",
)
@click.option("--arch", default=None, help="Built-in architecture of a weights-only file (see `modelsec list`).")
@click.option("--data", default=None, help=f"{DATA_HELP} (default: the model's own data).")
@user_split_options
@data_options
@config_options(_audit_fields, into="settings")
@endpoint_options
@policy_options
@mlflow_options
@_out_folder("modelsec-audit", "result.json, report.html and adversarial.npz")
@run_options
def audit(model_path: str | None, data: str | None, members_file: str | None, nonmembers_file: str | None,
          population_file: str | None, test_file: str | None, bounds: str | None, split_seed: int | None,
          settings: dict[str, Any], store_path: str | None, no_store: bool, no_resume: bool, quiet: bool,
          endpoint: str | None, endpoint_batch_size: int | None, query_budget: int | None,
          endpoint_timeout: float | None, endpoint_retries: int | None, endpoint_backoff: float | None,
          rate_limit: float | None, endpoint_headers: tuple[str, ...], gate: Any, junit_path: str | None,
          baseline_spec: str | None, mlflow: bool | None, mlflow_uri: str | None, mlflow_experiment: str,
          **passed: Any) -> None:  # fmt: skip
    """Audit a model: evasion attacks (a preset) and membership inference; writes a report. An interrupted audit
    resumes where it stopped when the same command is run again (OUT/audit.ckpt). With --policy FILE, checks the
    result against the policy's rules and exits 4 when one fails (after writing every file); --baseline gives the
    run its baseline rules compare with. With --mlflow (or $MLFLOW_TRACKING_URI), logs the run to MLflow once its
    files are written."""
    from modelsec.audits import AuditConfig
    from modelsec.data.user_split import split_files
    from modelsec.outputs.audit import audit_and_write
    from modelsec.outputs.tracking import log_audit, mlflow_target

    if junit_path is not None and gate is None:
        raise ConfigError("--junit needs --policy FILE (it writes the policy's rules as test cases)")
    if baseline_spec is not None and gate is None:
        raise ConfigError("--baseline needs --policy FILE (its rules compare with the baseline)")
    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_experiment)  # checked before any work
    model = _endpoint_model(
        model_path, endpoint, endpoint_batch_size=endpoint_batch_size, query_budget=query_budget,
        endpoint_timeout=endpoint_timeout, endpoint_retries=endpoint_retries, endpoint_backoff=endpoint_backoff,
        rate_limit=rate_limit, endpoint_headers=endpoint_headers,
    )  # fmt: skip
    source = split_files(
        data, members=members_file, nonmembers=nonmembers_file, population=population_file, test=test_file
    )
    config = AuditConfig(**settings, split_seed=split_seed)
    baseline = None
    if gate is not None:
        from modelsec.audits.gate import check_gate_config, load_baseline

        if (
            baseline_spec is not None
        ):  # a run id is looked up in the store, even with --no-store (which only skips recording)
            baseline = load_baseline(baseline_spec, _store(store_path, False, readonly=True))
        check_gate_config(gate, config.eps, baseline=baseline)
    options = dict(
        config=config, bounds=_parse_bounds(bounds), store=_store(store_path, no_store), progress=_progress(quiet),
        resume=not no_resume, **passed,
    )  # fmt: skip
    outcome = audit_and_write(model, source, gate=gate, baseline=baseline, **options)
    if not quiet:
        printing.audit_summary(outcome.result)
    gated = None if gate is None else outcome.result.gate
    if gated is not None:
        printing.gate(gated)
        if junit_path is not None:
            from modelsec.outputs.junit import write_junit

            write_junit(gated, junit_path)
    if not quiet:
        click.echo(f"report: {outcome.files['report']}\nresult: {outcome.files['result']}")
        if junit_path is not None:
            click.echo(f"junit: {junit_path}")
        click.echo(f"run id: {outcome.result.run_id}")
    if tracking is not None:  # logged before the policy's exit code; a failure: exit 2, the files kept
        artifacts = {**outcome.files, **({} if junit_path is None else {"junit": Path(junit_path)})}
        mlflow_run = log_audit(tracking, outcome.result, artifacts)
        if not quiet:
            click.echo(f"mlflow run: {mlflow_run} ({tracking.uri}, experiment {tracking.experiment})")
    if gated is not None and not gated.passed:
        sys.exit(EXIT_POLICY_FAILED)


@cli.command(cls=ConfigCommand)
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("hardened", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", default=None, help=f"{DATA_HELP} (default: the baseline's own data).")
@user_split_options
@data_options
@config_options(_audit_fields, into="settings")
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=5.0,
    show_default=True,
    help="The recommendation rule's N: only models at most N percentage points of clean accuracy below the "
    "baseline's are recommended.",
)
@gate_options
@mlflow_options
@_out_folder("modelsec-compare", "comparison.html/.json/.md and one audit folder per model")
@run_options
def compare(data: str | None, members_file: str | None, nonmembers_file: str | None, population_file: str | None,
            test_file: str | None, bounds: str | None, split_seed: int | None, settings: dict[str, Any],
            store_path: str | None, no_store: bool, no_resume: bool, quiet: bool, gate: Any,
            junit_path: str | None, mlflow: bool | None, mlflow_uri: str | None, mlflow_experiment: str,
            **passed: Any) -> None:  # fmt: skip
    """Audit BASELINE and each HARDENED model the same way (same settings, seed, test records and membership
    candidates) and write a comparison report with a recommendation. With --policy FILE, checks every model's
    audit against the policy (its baseline rules compare each HARDENED model with BASELINE) and exits 4 when a
    model fails a rule (after writing every file). With --mlflow (or $MLFLOW_TRACKING_URI), logs each model's audit
    to MLflow as a run of its own, tagged with the comparison."""
    from modelsec.audits import AuditConfig
    from modelsec.data.user_split import split_files
    from modelsec.outputs.compare import compare_and_write
    from modelsec.outputs.tracking import log_audit, mlflow_target

    _junit_needs_policy(gate, junit_path)
    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_experiment)  # checked before any work
    source = split_files(
        data, members=members_file, nonmembers=nonmembers_file, population=population_file, test=test_file
    )
    config = AuditConfig(**settings, split_seed=split_seed)
    if gate is not None:
        from modelsec.audits.gate import check_gate_config

        check_gate_config(gate, config.eps, in_comparison=True)
    outcome = compare_and_write(
        data=source, config=config, bounds=_parse_bounds(bounds), store=_store(store_path, no_store),
        progress=_progress(quiet), resume=not no_resume, gate=gate, **passed,
    )  # fmt: skip
    if not quiet:
        printing.comparison(outcome.comparison)
    passed_gate = gate is None or _report_gates(
        {m.name: m.gate for m in outcome.comparison.models if m.gate is not None}, junit_path
    )
    if not quiet:
        click.echo(f"report: {outcome.files['html']}\nresult: {outcome.files['comparison']}")
        if junit_path is not None:
            click.echo(f"junit: {junit_path}")
    if tracking is not None:  # one run per model, before the policy's exit code; a failure: exit 2, the files kept
        comparison = outcome.comparison
        for name, audit in outcome.audits.items():
            tags = {"modelsec.comparison": str(outcome.files.get("comparison", "")), "modelsec.compared_model": name,
                    "modelsec.baseline_model": comparison.baseline}  # fmt: skip
            mlflow_run = log_audit(tracking, audit.result, audit.files, tags=tags)
            if not quiet:
                click.echo(f"mlflow run: {mlflow_run} ({name}; {tracking.uri}, experiment {tracking.experiment})")
    if not passed_gate:
        sys.exit(EXIT_POLICY_FAILED)


@cli.command(cls=ConfigCommand)
@training_data_options
@_out_file("Weights file to write (safetensors); metadata goes to OUT.json.")
@config_options(_training_fields, into="training")
@members_option
@overwrite_option
@device_option
@quiet_option
def train(bounds: str | None, split_seed: int | None, out_path: str, training: dict[str, Any], quiet: bool,
          **passed: Any) -> None:  # fmt: skip
    """Train a model on a data set's members split (standard training) and save it as safetensors."""
    from modelsec.defenses.training import TrainingConfig, train_and_save

    result = train_and_save(
        out=Path(out_path), config=TrainingConfig(**training), split_seed=split_seed or 0,
        bounds=_parse_bounds(bounds), progress=_progress(quiet), **passed,
    )  # fmt: skip
    if not quiet:
        accuracy = result["training"]["test_accuracy"][-1]
        click.echo(f"saved {out_path} ({result['arch']}, test accuracy {accuracy:.2%}) and {out_path}.json")


def _members_count_or_file(members: str | None, nonmembers: str | None) -> tuple[int | None, str | None]:
    """``harden --members``: a count (train on the first N members of --data) or, with ``--nonmembers``, the file
    of the exact records to train on."""
    if members is None or nonmembers is not None:
        return None, members
    try:
        count = int(members)
    except ValueError:
        raise ConfigError(
            f"--members {members}: a file of training records needs --nonmembers FILE (records held out, for the "
            "test accuracy and the later audit); without it --members is a count N (the first N members of --data)"
        ) from None
    if count < 1:
        raise ConfigError(f"--members must be >= 1, got {count}")
    return count, None


@cli.command(cls=ConfigCommand)
@click.option("--defense", required=True, help="Defense by name (see `modelsec list defenses`).")
@config_json_option
@training_data_options
@_out_file(
    "Model file to write: safetensors, or .keras for a Keras --base; provenance goes to OUT.json, the per-epoch "
    "checkpoint to OUT.ckpt."
)
@config_options(_defense_fields, into="options")
@click.option(
    "--members",
    default=None,
    help="N: train on only the first N members of --data (default: all). Or, with --nonmembers, a .npz/.csv "
    "file or image folder of the exact records to train on (your own split, recorded in the model).",
)
@click.option(
    "--nonmembers",
    "nonmembers_file",
    type=click.Path(),
    default=None,
    help="With --members FILE: records held out from training (the test accuracy; a later audit's non-members).",
)
@overwrite_option
@click.option("--no-resume", is_flag=True, help="Ignore (and replace) a checkpoint OUT.ckpt left by an earlier run.")
@click.option(
    "--base",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The architecture to train from its initial weights: a Keras model (.keras/.h5; the result is saved as "
    ".keras) or a safetensors file modelsec wrote. With output-hardening: the trained model file to harden "
    "without training (--data, --arch unused).",
)
@click.option(
    "--trust-model",
    is_flag=True,
    help="Allow a Keras --base that holds code (Lambda layers, custom objects). Only for files you trust.",
)
@mlflow_options
@device_option
@quiet_option
def harden(defense: str, config_json: str | None, bounds: str | None, split_seed: int | None, out_path: str,
           options: dict[str, Any], members: str | None, nonmembers_file: str | None, data: str, no_resume: bool,
           quiet: bool, mlflow: bool | None, mlflow_uri: str | None, mlflow_experiment: str,
           **passed: Any) -> None:  # fmt: skip
    """Train a model with a defense (adversarial training, DP-SGD, ...) and save it with its provenance: as
    safetensors, or in its own format for your own architecture (--base model.keras).

    Resumable: after each epoch a checkpoint OUT.ckpt is written; rerunning the same command
    continues from it. With --mlflow (or $MLFLOW_TRACKING_URI), logs the run to MLflow, each epoch a step.
    """
    from modelsec.data.user_split import split_files
    from modelsec.defenses import harden as run_harden
    from modelsec.defenses.training import output_paths
    from modelsec.outputs.tracking import log_hardening, mlflow_target

    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_experiment)  # checked before any work
    count, members_file = _members_count_or_file(members, nonmembers_file)
    source = split_files(None, members=members_file, nonmembers=nonmembers_file) if members_file else None
    if source is not None and data != DEFAULT_TRAINING_DATA:
        raise ConfigError(f"--data {data} and --members/--nonmembers both say which data to train on; give one")
    result = run_harden(
        defense, out=Path(out_path), config=_defense_config(defense, config_json, options),
        data=source or data, members=count, split_seed=split_seed or 0, bounds=_parse_bounds(bounds),
        progress=_progress(quiet), resume=not no_resume, **passed,
    )  # fmt: skip
    if result["stop_reason"]:
        click.echo(f"stopped early: {result['stop_reason']}", err=True)
    if not quiet:
        test_accuracy = (result["training"] or {}).get("test_accuracy")  # None: a model hardened without training
        accuracy = f", test accuracy {test_accuracy[-1]:.2%}" if test_accuracy else ""
        click.echo(
            f"saved {out_path} ({result['defense']['name']}, {result['arch']}{accuracy}; "
            f"{result['guarantees']['summary']}) and {out_path}.json"
        )
    if tracking is not None:  # a failure: exit 2, the files kept
        model_file, provenance_file = output_paths(Path(out_path))
        mlflow_run = log_hardening(tracking, result, {"model": model_file, "provenance": provenance_file})
        if not quiet:
            click.echo(f"mlflow run: {mlflow_run} ({tracking.uri}, experiment {tracking.experiment})")


@cli.command("audit-dp", cls=ConfigCommand)
@click.option(
    "--defense",
    default="dp-sgd",
    show_default=True,
    help="The training under audit, by defense name (see `modelsec list defenses`); standard: non-private.",
)
@config_json_option
@training_data_options
@config_options(_dp_audit_fields, into="canary_audit")
@config_options(lambda: _defense_fields(exclude=("seed",)), into="options")  # --seed: the audit's, above
@config_options(_executor_fields, into="execution")
@members_option
@gate_options
@mlflow_options
@_out_folder("modelsec-dp-audit", "dp_audit.json and dp_audit.html")
@device_option
@quiet_option
def audit_dp(defense: str, config_json: str | None, bounds: str | None, split_seed: int | None,
             canary_audit: dict[str, Any], options: dict[str, Any], execution: dict[str, Any], quiet: bool,
             gate: Any, junit_path: str | None, mlflow: bool | None, mlflow_uri: str | None, mlflow_experiment: str,
             **passed: Any) -> None:  # fmt: skip
    """Check a DP claim with one training run (Steinke, Nasr & Jagielski 2023): train with canaries, bound epsilon.

    --runs N audits N independent runs (each a task on --executor) and combines their bounds (Bonferroni over the
    runs). Exits 3, with a red verdict, when the (combined) empirical lower bound exceeds the claimed epsilon (the
    training does not deliver its claim: a bug, not a result); 0 otherwise, also for a run without a claim (the
    bound is reported). With --policy FILE (rules privacy.max_epsilon_lower_bound and dp.max_claimed_epsilon),
    exits 4 when a rule fails and the claim holds. With --mlflow (or $MLFLOW_TRACKING_URI), logs the audit to
    MLflow once its files are written.
    """
    from modelsec.core.executors import ExecutorConfig
    from modelsec.outputs.dp_audit import dp_audit_and_write
    from modelsec.outputs.tracking import log_dp_audit, mlflow_target

    _junit_needs_policy(gate, junit_path)
    tracking = mlflow_target(mlflow, mlflow_uri, mlflow_experiment)  # checked before any work
    executor = ExecutorConfig(**execution)  # checked before the data loads
    config = _defense_config(defense, config_json, {**options, "seed": canary_audit["seed"]})
    result, files = dp_audit_and_write(
        defense, config=config, **canary_audit, split_seed=split_seed or 0, bounds=_parse_bounds(bounds),
        executor=executor, progress=_progress(quiet), gate=gate, **passed,
    )  # fmt: skip
    if not quiet:
        printing.dp_audit(result)
    passed_gate = gate is None or _report_gates({None: result.gate}, junit_path)
    if not quiet:
        click.echo(f"report: {files['report']}\nresult: {files['result']}")
        if junit_path is not None:
            click.echo(f"junit: {junit_path}")
    if tracking is not None:  # before the exit codes 3 and 4; a failure: exit 2, the files kept
        artifacts = {**files, **({} if junit_path is None else {"junit": Path(junit_path)})}
        mlflow_run = log_dp_audit(tracking, result, artifacts)
        if not quiet:
            click.echo(f"mlflow run: {mlflow_run} ({tracking.uri}, experiment {tracking.experiment})")
    if not result.passed:
        click.secho(f"FAIL: {result.verdict()}", fg="red", bold=True, err=True)
        sys.exit(EXIT_PRIVACY_VIOLATION)
    click.secho(("ok: " if result.claimed_epsilon is not None else "") + result.verdict(), fg="green")
    if not passed_gate:
        sys.exit(EXIT_POLICY_FAILED)


# -- policies of reinforcement-learning agents (issue 15) ----------------------------------------------------------

env_option = click.option(
    "--env", "env_id", required=True, help="Gymnasium environment id (CartPole-v1, Acrobot-v1, Pendulum-v1, ...)."
)
POLICY_DEFENSES = ("standard", "sa-ppo", "pgd-ppo")


@cli.command("audit-policy", cls=ConfigCommand)
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Policy file: safetensors written by modelsec, torch.export .pt2, or a Stable-Baselines3 .zip.",
)
@env_option
@config_options(_policy_audit_fields, into="settings")
@_out_folder("modelsec-policy-audit", "result.json, report.html and episode.gif")
@store_option
@click.option("--no-store", is_flag=True, help="Do not record the run in the run store.")
@quiet_option
def audit_policy(policy_path: str, env_id: str, settings: dict[str, Any], out_dir: str, store_path: str | None,
                 no_store: bool, quiet: bool) -> None:  # fmt: skip
    """Audit a trained policy in a Gymnasium environment: its mean return over seeded episodes, clean and under
    attacks on its observations (eps in standard deviations of each observation dimension); writes a report."""
    from modelsec.audits.policy_audit import PolicyAuditConfig
    from modelsec.outputs.policy_audit import policy_audit_and_write

    config = PolicyAuditConfig(policy=policy_path, env=env_id, **settings)
    written = policy_audit_and_write(
        config, out_dir=out_dir, store=_store(store_path, no_store), progress=_progress(quiet)
    )
    if not quiet:
        printing.policy_audit(written.result)
        click.echo(f"report: {written.files['report']}\nresult: {written.files['result']}")
        click.echo(f"run id: {written.result.run_id}")


@cli.command("compare-policies", cls=ConfigCommand)
@click.option(
    "--policies",
    required=True,
    help="Comma-separated policy files; the first is the baseline (its observation scale is every audit's unit).",
)
@env_option
@config_options(_policy_audit_fields, into="settings")
@click.option(
    "--max-return-drop",
    type=float,
    default=10.0,
    show_default=True,
    help="The recommendation rule's N: only policies whose clean mean return is at most N% below the baseline's "
    "are recommended.",
)
@_out_folder("modelsec-policy-compare", "comparison.html/.json and one audit folder per policy")
@store_option
@click.option("--no-store", is_flag=True, help="Do not record the audits in the run store.")
@quiet_option
def compare_policies(policies: str, env_id: str, settings: dict[str, Any], max_return_drop: float, out_dir: str,
                     store_path: str | None, no_store: bool, quiet: bool) -> None:  # fmt: skip
    """Audit several policies the same way (same episodes, attacks, eps and observation scale) and recommend the
    most robust one that keeps its clean return."""
    from modelsec.audits.policy_audit import PolicyAuditConfig
    from modelsec.cli.config_options import parse_names
    from modelsec.outputs.policy_audit import compare_policies_and_write

    paths = parse_names(policies)
    config = PolicyAuditConfig(policy=None, env=env_id, **settings)
    comparison, files = compare_policies_and_write(
        paths, config, out_dir=out_dir, store=_store(store_path, no_store), progress=_progress(quiet),
        max_return_drop=max_return_drop,
    )  # fmt: skip
    if not quiet:
        printing.policy_comparison(comparison)
        click.echo(f"report: {files['html']}\nresult: {files['comparison']}")


@cli.command("harden-policy", cls=ConfigCommand)
@env_option
@click.option(
    "--defense",
    type=click.Choice(POLICY_DEFENSES),
    default="standard",
    show_default=True,
    help="standard: PPO; sa-ppo: PPO with the state-adversarial smoothness regulariser (Zhang et al. 2020); "
    "pgd-ppo: PPO on PGD-perturbed observations.",
)
@click.option("--steps", type=COUNT, default=None, help="Environment steps of training (default: PPO's default).")
@config_options(_policy_hardening_fields, into="hardening")
@config_options(_ppo_fields, into="ppo")
@click.option(
    "--scale-from",
    type=click.Path(dir_okay=False),
    default=None,
    help="A policy file (the baseline): harden against the observation scale an audit estimates from its clean "
    "episodes (audit-policy's defaults), so that training and audit share one threat model; instead of --scale.",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="Seeds the training.")
@_out_file("Policy file to write (safetensors with its card); the training checkpoint goes to OUT.ckpt/.")
@overwrite_option
@click.option("--resume", is_flag=True, help="Continue from the checkpoint OUT.ckpt/ an interrupted run left.")
@quiet_option
def harden_policy(env_id: str, defense: str, steps: int | None, hardening: dict[str, Any], ppo: dict[str, Any],
                  scale_from: str | None, seed: int, out_path: str, overwrite: bool, resume: bool,
                  quiet: bool) -> None:  # fmt: skip
    """Train a policy with PPO (standard), or hardened against observation attacks (sa-ppo, pgd-ppo), and save it.
    Resumable: with --resume the same command continues from OUT.ckpt/."""
    import shutil

    from modelsec.rl.environments import make_env
    from modelsec.rl.files import load_policy, save_policy
    from modelsec.rl.hardening import PolicyHardening
    from modelsec.rl.hardening import harden_policy as run_hardening
    from modelsec.rl.ppo import PPOConfig, train_ppo

    out = Path(out_path)
    if out.exists() and not overwrite and not resume:
        raise ConfigError(f"{out_path} exists; pass --overwrite to replace it")
    if defense == "standard" and (hardening or scale_from):
        given = ", ".join("--" + k.replace("_", "-") for k in [*hardening, *(["scale_from"] if scale_from else [])])
        raise ConfigError(f"{given} only apply with --defense sa-ppo or pgd-ppo")
    if scale_from is not None and "scale" in hardening:
        raise ConfigError("give --scale or --scale-from, not both")
    total: dict[str, Any] = {} if steps is None else {"total_steps": steps}
    ppo_config = PPOConfig(**ppo, **total)
    make_env(env_id).close()  # an unknown id, or a missing extra: before any training
    if scale_from is not None:
        from modelsec.audits.policy_audit import observation_scale

        if not Path(scale_from).is_file():
            raise ConfigError(f"--scale-from: no policy file at {scale_from}")
        hardening["scale"] = tuple(float(v) for v in observation_scale(load_policy(scale_from), env_id))
    checkpoint = out.with_name(out.name + ".ckpt")
    if checkpoint.exists() and not resume:
        shutil.rmtree(checkpoint)
    progress = _progress(quiet)
    if defense == "standard":
        result = train_ppo(env_id, ppo_config, seed=seed, progress=progress, checkpoint_dir=checkpoint)
    else:
        config = PolicyHardening(method=defense, ppo=ppo_config, **hardening)
        result = run_hardening(env_id, config, seed=seed, progress=progress, checkpoint_dir=checkpoint)
    policy = result.policy
    policy.card = {**policy.card, "training_seconds": round(float(result.seconds), 3), "defense": defense}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_policy(policy, out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    if not quiet:
        last = result.history[-1].mean_return if result.history else float("nan")
        click.echo(f"saved {out_path} ({defense}, {env_id}; last mean training return {last:.1f}; "
                   f"{result.seconds:.0f} s)")  # fmt: skip


@cli.group()
def runs() -> None:
    """Inspect the run store."""


@runs.command("list")
@click.option("--limit", type=COUNT, default=20, show_default=True)
@store_option
def runs_list(limit: int, store_path: str | None) -> None:
    """List recorded runs, newest first."""
    store = _store(store_path, False, readonly=True)
    printing.runs(store.list_runs(limit=limit), store.path)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full result JSON.")
@store_option
def runs_show(run_id: str, as_json: bool, store_path: str | None) -> None:
    """Show one run (RUN_ID or a unique prefix of it)."""
    run = _store(store_path, False, readonly=True).get(run_id)
    if run.result is None:  # a policy audit: its result is plain JSON
        if as_json:
            click.echo(json.dumps(run.result_dict, indent=2))
            return
        click.echo(f"{run.summary.kind} {run.summary.id}: {run.summary.verdict_level}: {run.summary.headline}")
        for a in run.artifacts:
            click.echo(f"artifact {a.name}: {a.path} (sha256 {a.sha256[:12]})")
        return
    if as_json:
        click.echo(json.dumps(run.result.to_dict(), indent=2))
        return
    from modelsec.report import render_markdown

    click.echo(render_markdown(run.result))
    for a in run.artifacts:
        click.echo(f"artifact {a.name}: {a.path} (sha256 {a.sha256[:12]})")


@runs.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option(
    "--significance", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.05, show_default=True,
    help="Level of McNemar's exact two-sided test on the paired records: a robustness change is significant at p "
    "below it.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@store_option
def runs_diff(run_a: str, run_b: str, significance: float, as_json: bool, store_path: str | None) -> None:
    """Two audits side by side, and what changed significantly.

    RUN_A and RUN_B: run ids (or unique prefixes) in the run store, result.json files or their folders, as
    `--baseline` takes. Robustness per eps: both worst-case robust accuracies and, where both runs'
    adversarial.npz hold the same records, McNemar's exact two-sided test (b: robust in A only, c: in B only).
    Clean accuracy and membership (AUC, TPR at 0.1% FPR): "changed" when the two 95% intervals do not overlap,
    which is conservative (overlapping intervals can still differ significantly), not a test.
    """
    from modelsec.audits.diff import diff_runs, load_run

    store = None
    if not all(_is_result_path(s) for s in (run_a, run_b)):
        store = _store(store_path, False, readonly=True)
    diff = diff_runs(load_run(run_a, store), load_run(run_b, store), significance=significance)
    if as_json:
        click.echo(json.dumps(diff.to_dict(), indent=2))
        return
    printing.run_diff(diff)


def _is_result_path(spec: str) -> bool:
    path = Path(spec)
    return spec.endswith(".json") or path.is_file() or (path / "result.json").is_file()


@cli.command("report")
@click.argument("result_json", type=click.Path(exists=True, dir_okay=False))
@_out_file("HTML file to write.")
def report(result_json: str, out_path: str) -> None:
    """Render report.html again from a result.json (of an audit or a policy audit)."""
    from modelsec.results.audit import AuditResult

    if _is_policy_audit(result_json):
        from modelsec.outputs.policy_audit import rerender_policy_report

        rerender_policy_report(result_json, out_path)
        click.echo(f"report: {out_path}")
        return

    try:
        result = AuditResult.load(result_json)  # DataError naming the field when it is not a result
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{printable(result_json)} is not a modelsec result.json ({printable(e)})") from None
    from modelsec.report import write_html  # after the checks: it imports matplotlib

    write_html(result, out_path)
    click.echo(f"report: {out_path}")


def _is_policy_audit(path: str) -> bool:
    from modelsec.results.policy_audit import POLICY_AUDIT_SCHEMA

    try:
        return bool(json.loads(Path(path).read_text(encoding="utf-8")).get("schema") == POLICY_AUDIT_SCHEMA)
    except (OSError, ValueError, AttributeError):
        return False


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
        from modelsec.rl.attacks import POLICY_ATTACKS

        click.echo("policy attacks:     " + ", ".join(POLICY_ATTACKS.names()) + " (modelsec audit-policy)")
    if kind in ("architectures", "all"):
        click.echo("architectures:      " + ", ".join(ARCHITECTURES.names()))
    if kind in ("datasets", "all"):
        click.echo("data sets:          " + ", ".join(DATASETS.names()) + " (or a .npz / .csv file or an image folder)")
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
