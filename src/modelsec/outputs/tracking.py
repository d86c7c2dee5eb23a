"""Logging modelsec's results to an experiment tracker, MLflow (``modelsec audit``, ``compare``, ``audit-dp`` and
``harden`` with ``--mlflow``).

One MLflow run per audit or hardening, through :class:`mlflow.MlflowClient` (never MLflow's global "active run",
so nothing leaks from one call to the next):

- an audit (:func:`log_audit`): its settings, seed, data and model as params; every headline number as a metric
  (clean and worst-case robust accuracy per eps with their interval ends, robust accuracy per eps and attack,
  each membership attack's AUC, TPR at each FPR and empirical epsilon lower bound, the policy's rules as 0/1,
  timings in seconds); its files (``result.json``, ``report.html``, ``adversarial.npz``, ...) as artifacts; tags
  ``modelsec.model_sha256``, ``modelsec.run_id``, ``modelsec.kind`` and ``modelsec.verdict`` (and
  ``modelsec.policy``: passed / failed);
- a one-run DP audit (:func:`log_dp_audit`): its settings and the training's record as params, the claimed and
  every accountant's epsilon, the empirical lower bound and the guesses as metrics, ``dp_audit.json`` and
  ``dp_audit.html`` as artifacts, whether the claim held as a tag;
- a hardening (:func:`log_hardening`): the defense and its config as params, each per-epoch series of its
  training history as a metric with one step per epoch, the model file and its ``OUT.json`` as artifacts, the
  model file's SHA-256 and the defense's guarantee as tags.

Where runs go (:func:`mlflow_target`): the tracking URI given, else ``$MLFLOW_TRACKING_URI``, else MLflow's own
default (``sqlite:///mlflow.db`` in the working folder, or ``./mlruns`` when that folder holds a file store), so
that ``mlflow ui`` started in the same folder shows the runs. Everything is checked before the audit or the
training starts: MLflow importable (the ``mlflow`` extra), the URI usable, the experiment found or created; a
problem is a :class:`~modelsec.core.errors.ConfigError` saying what to do. MLflow 3 refuses its file store
(``file:///path``) unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set: modelsec does not set it for the user (the
store is deprecated upstream; choosing it is the user's call), it says so.

MLflow is imported only here, only when tracking is on (its import takes about a second).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelsec.core.errors import ConfigError, printable
from modelsec.core.version import __version__
from modelsec.results.audit import AuditResult, eps_key
from modelsec.results.dp_audit import DPAuditResult

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
DEFAULT_EXPERIMENT = "modelsec"
INSTALL_HINT = "pip install 'modelsec[mlflow]'"

MAX_KEY_CHARS = 250  # MLflow's limit on a param's, metric's or tag's name
MAX_PARAM_CHARS = 6000  # ... on a param's value
MAX_TAG_CHARS = 5000  # ... on a tag's value (8000 in MLflow 3, 5000 in older servers)
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class MlflowTarget:
    """Where to log: an MLflow client for the tracking ``uri`` and the ``experiment`` (its id found or created)."""

    uri: str
    experiment: str
    experiment_id: str
    client: Any  # mlflow.MlflowClient


def tracking_uri(uri: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The tracking URI given, else ``$MLFLOW_TRACKING_URI`` (an empty value counts as unset), else ``None``."""
    env = os.environ if environ is None else environ
    return uri or env.get(TRACKING_URI_ENV) or None


def tracking_enabled(enabled: bool | None, uri: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to log: ``enabled`` when given (``--mlflow`` / ``--no-mlflow``), otherwise whenever a tracking URI is
    given or ``$MLFLOW_TRACKING_URI`` is set."""
    return enabled if enabled is not None else tracking_uri(uri, environ) is not None


def mlflow_target(
    enabled: bool | None, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT
) -> MlflowTarget | None:
    """The MLflow run destination, checked before any work; ``None`` when tracking is off
    (:func:`tracking_enabled`).

    ``uri``: the tracking URI (default: ``$MLFLOW_TRACKING_URI``, else MLflow's own default). Raises
    :class:`~modelsec.core.errors.ConfigError` when MLflow is not installed, cannot use the URI (an unknown
    scheme, a database without SQLAlchemy, the file store without ``MLFLOW_ALLOW_FILE_STORE=true``, a server that
    does not answer) or the experiment was deleted."""
    if not tracking_enabled(enabled, uri):
        return None
    if not experiment or not experiment.strip():
        raise ConfigError("--mlflow-experiment: the experiment's name is empty")
    mlflow = _import_mlflow()
    given = tracking_uri(uri)
    resolved = given if given is not None else str(mlflow.get_tracking_uri())
    try:
        client = mlflow.MlflowClient(resolved)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = str(client.create_experiment(experiment))
        elif found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"the MLflow experiment {printable(experiment)!r} at {printable(resolved)} is deleted: restore it "
                "(mlflow experiments restore) or log to another one (--mlflow-experiment NAME)"
            )
        else:
            experiment_id = str(found.experiment_id)
    except ConfigError:
        raise
    except Exception as e:  # whatever MLflow raises for a URI it cannot use, said as a user's error
        raise ConfigError(_uri_problem(resolved, e, defaulted=given is None)) from None
    return MlflowTarget(uri=resolved, experiment=experiment, experiment_id=experiment_id, client=client)


def log_audit(
    target: MlflowTarget,
    result: AuditResult,
    files: Mapping[str, str | Path],
    *,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log the audit ``result`` and its written ``files`` (by key, as :func:`~modelsec.outputs.audit.write_audit`
    returns them; each becomes an artifact) as one finished MLflow run; returns the MLflow run's id. ``tags``: more
    tags (a comparison's, naming it and the model's role in it).

    Raises :class:`~modelsec.core.errors.ConfigError` when MLflow fails (the run is then marked failed); the files
    are left as they are."""
    name = Path(result.model.path).name if result.model.path else (result.model.arch or result.model.format)
    extra = {k: printable(v, max_chars=MAX_TAG_CHARS) for k, v in (tags or {}).items()}
    return _log_run(
        target,
        run_name=f"audit {name}",
        params=audit_params(result),
        metrics={k: (v,) for k, v in audit_metrics(result).items()},
        tags={**audit_tags(result), **extra},
        files=[Path(p) for p in files.values()],
    )


def log_hardening(target: MlflowTarget, record: Mapping[str, Any], files: Mapping[str, str | Path]) -> str:
    """Log a hardening: ``record`` is the provenance :func:`~modelsec.defenses.harden` returns (what ``OUT.json``
    holds), ``files`` the model file (key ``model``, whose SHA-256 tags the run) and ``OUT.json`` (``provenance``);
    each per-epoch series of the training history becomes a metric with one step per epoch. Returns the MLflow
    run's id; raises :class:`~modelsec.core.errors.ConfigError` like :func:`log_audit`."""
    from modelsec.models.loading import sha256_file

    paths = {key: Path(p) for key, p in files.items()}
    tags = hardening_tags(record)
    if "model" in paths:
        tags["modelsec.model_sha256"] = sha256_file(paths["model"])
    defense = (record.get("defense") or {}).get("name", "model")
    out = paths.get("model")
    return _log_run(
        target,
        run_name=f"harden {defense}" + ("" if out is None else f" {out.name}"),
        params=hardening_params(record),
        metrics=hardening_metrics(record),
        tags=tags,
        files=list(paths.values()),
    )


# -- what an audit logs ---------------------------------------------------------------------------------------------


def log_dp_audit(target: MlflowTarget, result: DPAuditResult, files: Mapping[str, str | Path]) -> str:
    """Log a one-run DP audit (``modelsec audit-dp``): its settings and the training's record as params, the claim
    and the empirical lower bound as metrics (:func:`dp_audit_metrics`), ``dp_audit.json`` and ``dp_audit.html``
    as artifacts; returns the MLflow run's id. Raises :class:`~modelsec.core.errors.ConfigError` like
    :func:`log_audit`."""
    training = result.training or {}
    tags = {"modelsec.kind": "dp-audit", "modelsec.dp_claim": "upheld" if result.passed else "contradicted"}
    if result.claimed_epsilon is None:
        tags["modelsec.dp_claim"] = "none"
    if result.gate is not None:
        tags["modelsec.policy"] = "passed" if result.gate.passed else "failed"
    return _log_run(
        target,
        run_name=f"dp-audit {training.get('defense', '')}".strip(),
        params=dp_audit_params(result),
        metrics={k: (v,) for k, v in dp_audit_metrics(result).items()},
        tags={k: printable(v, max_chars=MAX_TAG_CHARS) for k, v in tags.items()},
        files=[Path(p) for p in files.values()],
    )


def dp_audit_params(result: DPAuditResult) -> dict[str, str]:
    """A DP audit's params: the canaries, the test's settings, the claim's accountant and delta, the seed and the
    training's record (defense, config, data)."""
    given = {
        "canaries": result.canaries, "canary_kind": result.canary_kind, "score": result.score, "beta": result.beta,
        "correction": result.correction, "tests": result.tests, "seed": result.seed, "delta": result.delta,
        "accountant": result.accountant, "runs": result.run_count or 1, "training": result.training,
        "modelsec_version": __version__,
    }  # fmt: skip
    return dict(flatten_params(given))


def dp_audit_metrics(result: DPAuditResult) -> dict[str, float]:
    """A DP audit's numbers, exactly those of ``dp_audit.json``: ``epsilon_lower_bound`` (several runs: the combined
    one), ``claimed_epsilon`` (absent without a claim) and ``epsilon/<accountant>``, ``claim_upheld`` (1 or 0), the
    guesses at the bound (``guesses``, ``correct_guesses``), ``canaries_included``, with a policy ``policy/passed``
    and one ``policy/<rule>`` per rule, and ``time/<part>`` in seconds."""
    m: dict[str, float] = {}
    _put(m, result.lower_bound, "epsilon_lower_bound")
    _put(m, result.claimed_epsilon, "claimed_epsilon")
    for accountant, value in result.epsilons.items():
        _put(m, value, "epsilon", accountant)
    _put(m, result.passed, "claim_upheld")
    _put(m, result.r, "guesses")
    _put(m, result.v, "correct_guesses")
    _put(m, result.included, "canaries_included")
    if result.gate is not None:
        _put(m, result.gate.passed, "policy", "passed")
        for rule in result.gate.rules:
            _put(m, rule.passed, "policy", rule_metric(rule.rule))
    for part in ("train_seconds", "score_seconds", "bound_seconds", "audit_seconds"):
        _put(m, getattr(result, part), "time", part.removesuffix("_seconds"))
    return m


def audit_params(result: AuditResult) -> dict[str, str]:
    """The audit's params: its settings (nested ones with dotted keys), seed, data, model and versions."""
    data, model = result.data, result.model
    given: dict[str, Any] = {
        "settings": result.settings,
        "seed": result.seed,
        "data": {"name": data.name, "split_seed": data.split_seed, "n_members": data.n_members,
                 "n_nonmembers": data.n_nonmembers, "n_population": data.n_population, "n_test": data.n_test},
        "model": {"path": model.path, "arch": model.arch, "format": model.format, "num_classes": model.num_classes,
                  "input_shape": model.input_shape, "parameters": model.parameters, "capability": model.capability},
        "modelsec_version": result.versions.get("modelsec", __version__),
        "versions": result.versions,
    }  # fmt: skip
    if model.dp_epsilon is not None:  # the DP claim the model file records
        given["model"].update(dp_epsilon=model.dp_epsilon, dp_delta=model.dp_delta)
    if result.robustness is not None:
        given["robustness"] = {"preset": result.robustness.preset, "prediction": result.robustness.prediction}
    return dict(flatten_params(given))


def audit_metrics(result: AuditResult) -> dict[str, float]:
    """Every headline number of the audit by metric name (values exactly those of ``result.json``):

    - ``clean_accuracy`` (and ``clean_accuracy_ci_low``, ``clean_accuracy_ci_high``);
      ``robust_accuracy/<eps>/worst_case`` (the per-sample worst case over the attacks, with ``worst_case_ci_low``
      and ``worst_case_ci_high`` beside it) and ``robust_accuracy/<eps>/<attack>`` per attack;
      ``min_norm/<attack>/median`` and ``/mean``; ``sanity_flags`` and ``sanity_flags_unresolved`` (counts);
    - per membership attack, ``membership/<attack>/auc`` (and ``auc_ci_low``, ``auc_ci_high``),
      ``tpr_at_fpr_<fpr>`` (and ``_ci_low``, ``_ci_high``), ``advantage``, ``balanced_accuracy``,
      ``epsilon_lower_bound`` and ``seconds``; the privacy part's numeric compute (``privacy_compute/<key>``);
      the DP claim the model file records, ``dp_claimed_epsilon``, when it makes one;
    - with a policy, ``policy/passed`` and one ``policy/<rule>`` per rule (``robustness.min_robust_accuracy(eps=0.1)``
      as ``policy/robustness.min_robust_accuracy.eps_0.1``): 1 passed, 0 failed;
    - ``time/<part>``: the audit's timings in seconds; ``attack_seconds/<eps>/<attack>``: each attack's.

    No name is a folder of another (``a`` beside ``a/b``), which MLflow's file store cannot hold.
    """
    m: dict[str, float] = {}
    rob = result.robustness
    if rob is not None:
        _put(m, rob.clean_accuracy, "clean_accuracy")
        _put(m, rob.clean_ci.low, "clean_accuracy_ci_low")
        _put(m, rob.clean_ci.high, "clean_accuracy_ci_high")
        for eps, value in rob.robust_accuracy.items():
            _put(m, value, "robust_accuracy", eps, "worst_case")
            ci = rob.robust_ci.get(eps)
            if ci is not None:
                _put(m, ci.low, "robust_accuracy", eps, "worst_case_ci_low")
                _put(m, ci.high, "robust_accuracy", eps, "worst_case_ci_high")
        for a in rob.results:
            eps = eps_key(a.eps)
            _put(m, a.robust_accuracy, "robust_accuracy", eps, a.attack)
            _put(m, a.seconds, "attack_seconds", eps, a.attack)
        for stats in rob.min_norm:
            _put(m, stats.median, "min_norm", stats.attack, "median")
            _put(m, stats.mean, "min_norm", stats.attack, "mean")
        _put(m, len(rob.flags), "sanity_flags")
        _put(m, sum(not f.resolved for f in rob.flags), "sanity_flags_unresolved")
    if result.privacy is not None:
        for attack in result.privacy.attacks:
            name = ("membership", attack.attack)
            _put(m, attack.auc, *name, "auc")
            _put(m, attack.auc_ci.low, *name, "auc_ci_low")
            _put(m, attack.auc_ci.high, *name, "auc_ci_high")
            for fpr, tpr in attack.tpr_at_fpr.items():
                _put(m, tpr, *name, f"tpr_at_fpr_{fpr}")
                ci = attack.tpr_ci.get(fpr)
                if ci is not None:
                    _put(m, ci.low, *name, f"tpr_at_fpr_{fpr}_ci_low")
                    _put(m, ci.high, *name, f"tpr_at_fpr_{fpr}_ci_high")
            _put(m, attack.advantage, *name, "advantage")
            _put(m, attack.balanced_accuracy, *name, "balanced_accuracy")
            _put(m, attack.epsilon_lower_bound, *name, "epsilon_lower_bound")
            _put(m, attack.seconds, *name, "seconds")
        for key, value in result.privacy.compute.items():
            _put(m, value, "privacy_compute", key)
    _put(m, result.model.dp_epsilon, "dp_claimed_epsilon")
    if result.gate is not None:
        _put(m, result.gate.passed, "policy", "passed")
        for rule in result.gate.rules:
            _put(m, rule.passed, "policy", rule_metric(rule.rule))
    for part, seconds in result.timings.items():
        _put(m, seconds, "time", part)
    return m


def audit_tags(result: AuditResult) -> dict[str, str]:
    """The audit's tags: the model's SHA-256 (when it has a file), modelsec's run id, the kind, the verdict's level
    and, with a policy, ``modelsec.policy``: ``passed`` or ``failed``."""
    tags = {"modelsec.kind": "audit", "modelsec.run_id": result.run_id, "modelsec.verdict": result.verdict.level}
    if result.model.sha256:
        tags["modelsec.model_sha256"] = result.model.sha256
    if result.gate is not None:
        tags["modelsec.policy"] = "passed" if result.gate.passed else "failed"
    return {k: printable(v, max_chars=MAX_TAG_CHARS) for k, v in tags.items()}


# -- what a hardening logs ------------------------------------------------------------------------------------------


def hardening_params(record: Mapping[str, Any]) -> dict[str, str]:
    """The hardening's params: the defense's name and config (``config.<key>``), the architecture, data, seed,
    the threat model it was trained against and the versions."""
    defense = record.get("defense") or {}
    guarantees = record.get("guarantees") or {}
    given = {
        "defense": defense.get("name"),
        "config": defense.get("config"),
        "arch": record.get("arch"),
        "input_shape": record.get("input_shape"),
        "num_classes": record.get("num_classes"),
        "data": record.get("data"),
        "seed": record.get("seed"),
        "threat_model": guarantees.get("threat_model"),
        "device": record.get("device"),
        "modelsec_version": record.get("modelsec_version", __version__),
        "versions": record.get("versions"),
        "base": defense.get("base"),  # output-hardening of a trained model file: the file hardened
    }
    return dict(flatten_params({k: v for k, v in given.items() if v is not None and v != {}}))


def hardening_metrics(record: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """Each per-epoch series of the training history (``train_loss``, ``train_accuracy``, ``test_accuracy`` and the
    defense's own, e.g. ``check_pgd_accuracy``) by name, step ``i`` being epoch ``i``; single values:
    ``time/training`` (seconds), ``epochs_completed``, and the guarantee's numbers (``guarantee/<key>``, e.g. a
    DP claim's ``epsilon`` and ``delta``). A hardening without training (``--base``) has no series."""
    series: dict[str, tuple[float, ...]] = {}
    history = record.get("training") or {}
    for key in ("train_loss", "train_accuracy", "test_accuracy"):
        if history.get(key):
            series[metric_name(key)] = tuple(float(v) for v in history[key])
    for key, values in (history.get("metrics") or {}).items():
        name = metric_name(key)
        series[name if name not in series else metric_name("metrics", key)] = tuple(float(v) for v in values)
    single: dict[str, float] = {}
    _put(single, record.get("training_seconds"), "time", "training")
    _put(single, record.get("epochs_completed"), "epochs_completed")
    for key, value in ((record.get("guarantees") or {}).get("details") or {}).items():
        _put(single, value, "guarantee", key)
    return {**series, **{k: (v,) for k, v in single.items()}}


def hardening_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The hardening's tags: the kind, the defense, and its guarantee (its kind and its one-line summary)."""
    guarantees = record.get("guarantees") or {}
    tags = {"modelsec.kind": "harden", "modelsec.defense": str((record.get("defense") or {}).get("name"))}
    if guarantees:
        tags["modelsec.guarantee"] = str(guarantees.get("kind"))
        tags["modelsec.guarantee_summary"] = str(guarantees.get("summary"))
    return {k: printable(v, max_chars=MAX_TAG_CHARS) for k, v in tags.items()}


# -- names and values -----------------------------------------------------------------------------------------------


def metric_name(*parts: object) -> str:
    """A metric (or param) name MLflow accepts from ``parts`` joined by ``/``: in each part, characters other than
    letters, digits, ``_ - .`` and spaces become ``_`` (a ``/`` inside a part too, so parts stay apart), and a part
    MLflow would read as a path step (empty, ``.``, ``..``) becomes ``_``.

    >>> metric_name("robust_accuracy", "0.1", "apgd-ce")
    'robust_accuracy/0.1/apgd-ce'
    >>> metric_name("membership", "a/b(c=1)", "..")
    'membership/a_b_c_1_/_'
    """
    cleaned = [re.sub(r"[^\w.\- ]", "_", str(p)) for p in parts]
    return "/".join("_" if c.strip(".") == "" else c for c in cleaned)[:MAX_KEY_CHARS]


def flatten_params(given: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``given`` as MLflow params: nested mappings flattened with dotted keys (``settings.eps``); strings as they
    are, other values as JSON (``null``, ``true``, ``[0.03, 0.1]``), cut to MLflow's 6000 characters.

    >>> dict(flatten_params({"settings": {"eps": [0.1], "norm": "linf", "extra": {}}, "seed": 0}))
    {'settings.eps': '[0.1]', 'settings.norm': 'linf', 'settings.extra': '{}', 'seed': '0'}
    """
    for key, value in given.items():
        name = metric_name(f"{prefix}{key}")
        if isinstance(value, Mapping) and value:
            yield from flatten_params(value, prefix=f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
            yield name, text[:MAX_PARAM_CHARS]


def _put(metrics: dict[str, float], value: Any, *parts: object) -> None:
    """``metrics[metric_name(*parts)] = value`` for a number (a bool as 0/1); ``None`` and non-numbers skipped."""
    if isinstance(value, bool):
        value = float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isinf(value)):
        metrics[metric_name(*parts)] = float(value)


def rule_metric(rule: str) -> str:
    """A policy rule's name as one metric name part: its parameters after a dot.

    >>> rule_metric("robustness.min_robust_accuracy(eps=0.1)")
    'robustness.min_robust_accuracy.eps_0.1'
    """
    match = re.fullmatch(r"([^(]*)\((.*)\)", rule)
    if match is None:
        return rule
    return ".".join((match.group(1), *(arg.strip().replace("=", "_") for arg in match.group(2).split(","))))


def check_names(names: Iterator[str] | list[str]) -> None:
    """Raise ``ValueError`` (a bug) when a metric name is a folder of another (``a`` and ``a/b``): MLflow's file
    store keeps each metric in a file at its name's path, so it cannot hold both."""
    given = set(names)
    for name in given:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in given:
                raise ValueError(f"metric names {'/'.join(parts[:i])!r} and {name!r} clash in MLflow's file store")


# -- MLflow ---------------------------------------------------------------------------------------------------------


def _import_mlflow() -> Any:
    try:
        return importlib.import_module("mlflow")
    except ImportError as e:
        raise ConfigError(
            f"--mlflow needs MLflow, which is not installed ({printable(e)}): {INSTALL_HINT} (or pip install "
            "mlflow-skinny)"
        ) from None


def _uri_problem(uri: str, error: Exception, *, defaulted: bool) -> str:
    """What to tell the user when MLflow cannot use ``uri`` (``defaulted``: MLflow's default, none was given)."""
    where = printable(uri) + (f" (MLflow's default, as ${TRACKING_URI_ENV} is not set)" if defaulted else "")
    server = f"${TRACKING_URI_ENV} (or --mlflow-uri) to a tracking server, http://HOST:PORT"
    if ALLOW_FILE_STORE_ENV in str(error):
        return (
            f"MLflow refuses its file store {where} unless {ALLOW_FILE_STORE_ENV}=true is set (MLflow 3 keeps it "
            f"in maintenance mode): set {ALLOW_FILE_STORE_ENV}=true to use it, or set {server}, or to a database "
            "(sqlite:///mlflow.db, with the full MLflow: pip install mlflow)"
        )
    supported = getattr(error, "supported_uri_schemes", None)  # MLflow's UnsupportedModelRegistryStoreURIException
    if supported is not None:
        scheme = urlparse(uri).scheme
        schemes = ", ".join(s for s in supported if s) or "none"
        problem = f"MLflow cannot track to {where}: it has no tracking store for {scheme!r} here (known: {schemes})"
        if scheme.split("+")[0] in DATABASE_SCHEMES:
            problem += "; a database needs the full MLflow with SQLAlchemy (pip install mlflow), not mlflow-skinny"
        return f"{problem}. Set {server}"
    detail = printable(error, max_chars=600)
    return f"MLflow cannot use the tracking URI {where}: {type(error).__name__}: {detail}. Set {server}"


def _log_run(
    target: MlflowTarget,
    *,
    run_name: str,
    params: Mapping[str, str],
    metrics: Mapping[str, tuple[float, ...]],
    tags: Mapping[str, str],
    files: list[Path],
) -> str:
    """Create a run in the target's experiment, log ``params``, ``metrics`` (each value's index its step), ``tags``
    and the ``files`` as artifacts, and mark it finished; returns its id. What MLflow raises becomes a
    :class:`~modelsec.core.errors.ConfigError` (the run, if created, marked failed)."""
    from mlflow.entities import Metric, Param, RunTag

    check_names(list(metrics))
    client = target.client
    now = int(time.time() * 1000)
    batch_metrics = [Metric(key, v, now, step) for key, values in metrics.items() for step, v in enumerate(values)]
    batch_params = [Param(key, value) for key, value in params.items()]
    batch_tags = [RunTag(key, value) for key, value in tags.items()]
    run_id: str | None = None
    try:
        run = client.create_run(target.experiment_id, run_name=run_name)
        run_id = str(run.info.run_id)
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)
        for path in files:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
    except Exception as e:  # MLflow's (or its store's) failure, said as a user's error; nothing written is lost
        if run_id is not None:
            with contextlib.suppress(Exception):  # the store is gone: the first failure is the one to report
                client.set_terminated(run_id, "FAILED")
        run = f" (run {run_id}, marked failed)" if run_id else ""
        raise ConfigError(
            f"logging to MLflow at {printable(target.uri)} failed{run}: {type(e).__name__}: "
            f"{printable(e, max_chars=600)}; the files written are kept"
        ) from None
    return run_id
