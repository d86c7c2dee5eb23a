"""modelsec: audit trained classifiers for adversarial robustness and training-data leakage, and harden them.

Python API::

    import modelsec
    result = modelsec.audit(data="fashion-mnist", eps=(0.1,), samples=200, out="runs/quick")
    print(result.verdict.headline)
    modelsec.harden("pgd-at", data="fashion-mnist", arch="small-cnn", out="models/at.safetensors",
                    config={"eps": 0.1})
    comparison = modelsec.compare("models/base.safetensors", "models/at.safetensors", out="runs/compare")
    print(comparison.recommendation.outcome())
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsec.core.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from modelsec.core.progress import Progress
    from modelsec.data.dataset import Splits
    from modelsec.defenses.base import DefenseConfig
    from modelsec.models.adapters.endpoint import ScoreFunction
    from modelsec.models.base import Classifier
    from modelsec.models.loading import LoadedModel
    from modelsec.results.audit import AuditResult
    from modelsec.results.comparison import Comparison


def audit(
    model: str | Path | nn.Module | Classifier | ScoreFunction | Callable[[Any], Any] | None = None,
    data: str | Splits | None = None,
    *,
    members: str | Path | None = None,
    nonmembers: str | Path | None = None,
    population: str | Path | None = None,
    test: str | Path | None = None,
    eps: tuple[float, ...] = (0.03, 0.1),
    samples: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    store: str | Path | bool = False,
    arch: str | None = None,
    trust_model: bool = False,
    device: str = "cpu",
    resume: bool = True,
    policy: str | Path | None = None,
    baseline: str | Path | None = None,
    mlflow: bool | str = False,
    mlflow_experiment: str = "modelsec",
    **options: Any,
) -> AuditResult:
    """Audit a classifier for evasion and membership leakage; see :class:`modelsec.audits.AuditConfig`.

    Args:
        model: a model file, an ``nn.Module`` or a :class:`~modelsec.models.Classifier`; a model behind a
            prediction API or any callable returning probabilities for a numpy batch (a black-box model: see
            :mod:`modelsec.models.adapters.endpoint`, whose ``endpoint(url)`` is the HTTP client); ``None`` audits
            the bundled Fashion-MNIST CNN.
        data: a data set name ("fashion-mnist", "digits", "breast-cancer"), a data file or image folder, or
            :class:`Splits`; ``None`` uses the data the model file records.
        members, nonmembers, population, test: the user's own split instead of ``data``: the exact records the
            model trained on and records it never saw (both needed), optionally population records and a test set
            (files or image folders; see :func:`modelsec.data.user_splits`).
        eps, samples, seed: see :class:`~modelsec.audits.AuditConfig`; further ``options`` go there too.
        out: folder for ``result.json``, ``report.html`` and ``adversarial.npz``; while the audit runs, also its
            checkpoint ``audit.ckpt`` (see :mod:`modelsec.audits.checkpoint`).
        store: record the run in a SQLite store: ``True`` for the default store, or a path.
        resume: continue from ``out/audit.ckpt`` when an interrupted audit of this same run left it (one of
            another run is refused); ``False`` ignores and replaces it.
        policy: a policy file (TOML, as ``modelsec audit --policy``: :mod:`modelsec.audits.gate`), read and checked
            before any work; the result's ``gate`` holds each rule's outcome (``result.gate.passed``).
        baseline: the run the policy's baseline rules compare with (as ``modelsec audit --baseline``): a
            ``result.json`` with its ``adversarial.npz`` beside it, or a run id in ``store`` (the default store
            when ``store`` is not a path); read and checked before any work. Needs ``policy``.
        mlflow: log the audit to MLflow once its files are written (as ``modelsec audit --mlflow``,
            :mod:`modelsec.outputs.tracking`): ``True`` to ``$MLFLOW_TRACKING_URI`` (else MLflow's default), or a
            tracking URI; checked before any work. ``mlflow_experiment``: the experiment (created if missing).
    """
    from modelsec.audits import AuditConfig
    from modelsec.data.dataset import Splits
    from modelsec.data.user_split import SplitFiles, split_files
    from modelsec.outputs.audit import audit_and_write
    from modelsec.store import RunStore, default_store_path

    source: str | Splits | SplitFiles | None = data
    if not isinstance(data, Splits):
        source = split_files(data, members=members, nonmembers=nonmembers, population=population, test=test)
    elif any(f is not None for f in (members, nonmembers, population, test)):
        from modelsec.core.errors import ConfigError

        raise ConfigError("give data (a Splits) or members and nonmembers, not both")
    config = AuditConfig(eps=tuple(eps), samples=samples, seed=seed, **options)
    gate = None
    loaded_baseline = None
    if baseline is not None and policy is None:
        from modelsec.core.errors import ConfigError

        raise ConfigError("baseline needs a policy (its rules compare with the baseline)")
    if policy is not None:
        from modelsec.audits.gate import check_gate_config, load_baseline, load_gate

        gate = load_gate(policy)
        if baseline is not None:
            lookup = RunStore(default_store_path() if isinstance(store, bool) else Path(store), readonly=True)
            loaded_baseline = load_baseline(baseline, lookup)
        check_gate_config(gate, config.eps, baseline=loaded_baseline)
    tracking = None
    if mlflow is not False:
        from modelsec.outputs.tracking import log_audit, mlflow_target

        tracking = mlflow_target(True, None if mlflow is True else str(mlflow), mlflow_experiment)
    run_store = None
    if store is not False:
        run_store = RunStore(default_store_path() if store is True else Path(store))
    outcome = audit_and_write(
        model,
        source,
        config=config,
        arch=arch,
        trust_model=trust_model,
        device=device,
        out_dir=out,
        store=run_store,
        resume=resume,
        gate=gate,
        baseline=loaded_baseline,
    )
    if tracking is not None:
        log_audit(tracking, outcome.result, outcome.files)
    return outcome.result


def harden(
    defense: str,
    *,
    data: str | Splits,
    arch: str | None,
    out: str | Path,
    config: dict[str, Any] | DefenseConfig | None = None,
    split_seed: int = 0,
    members: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    resume: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train ``arch`` on the data's members split with a registered defense ("pgd-at", "trades", "fgsm-rs",
    "standard", ...; see :data:`modelsec.defenses.DEFENSES`) and write safetensors weights (``out``), their
    provenance (``OUT.json``) and, while training, a resumable per-epoch checkpoint (``OUT.ckpt``).

    ``config`` holds the defense's options, validated before anything runs; further ``options`` (``data_dir``,
    ``label_column``, ``bounds``, ``progress``) go to :func:`modelsec.defenses.harden`. Returns the provenance.

    >>> modelsec.harden("pgd-at", data="digits", arch="mlp", out="models/digits-at.safetensors",
    ...                 config={"eps": 0.1, "epochs": 10})  # doctest: +SKIP
    """
    from modelsec.defenses import harden as _harden

    return _harden(
        defense,
        data=data,
        arch=arch,
        out=out,
        config=config,
        split_seed=split_seed,
        members=members,
        device=device,
        overwrite=overwrite,
        resume=resume,
        **options,
    )


def compare(
    baseline: str | Path,
    *hardened: str | Path,
    data: str | Splits | None = None,
    out: str | Path | None = None,
    config: Any = None,
    store: str | Path | bool | Any = False,
    progress: Progress | None = None,
    max_accuracy_drop: float = 5.0,
    trust_model: bool = False,
    device: str = "cpu",
    resume: bool = True,
    policy: str | Path | None = None,
    **audit_kwargs: Any,
) -> Comparison:
    """Run the same audit on a baseline and its hardened variants and recommend one; see
    :mod:`modelsec.audits.compare` and the rule in :func:`modelsec.audits.recommendation.rule_text`.

    Args:
        baseline, hardened: model files (safetensors, ``.pt2``, or pickle-based with ``trust_model``).
        data: a data set name or file, or :class:`Splits`; ``None`` uses the data the baseline records.
        out: folder for ``comparison.json``, ``comparison.html``, ``comparison.md`` and one audit folder per model.
        config: an :class:`~modelsec.audits.AuditConfig` shared by every audit; or give its fields as
            ``audit_kwargs`` (``eps``, ``samples``, ``preset``, ``mia_samples``, ``reference_models``, ``seed``, ...).
        store: record each audit in a SQLite store (``True``: the default store, or a path, or a ``RunStore``);
            reference models are cached there, or in a temporary folder for this comparison when ``False``.
        max_accuracy_drop: the rule's N, in percentage points of clean accuracy below the baseline's.
        resume: rerunning an interrupted comparison reuses its finished audits and resumes the one under way
            (``out/<model>/audit.ckpt``); ``False`` starts every audit over.
        policy: a policy file (as ``modelsec compare --policy``), read and checked before any work, evaluated on
            every model's audit (each ``ModelSummary.gate``; ``Comparison.gate_passed``); its baseline rules compare
            each hardened model with ``baseline``.

    >>> c = modelsec.compare("models/base.safetensors", "models/at.safetensors", eps=(0.1,),
    ...                      preset="quick", out="runs/compare")  # doctest: +SKIP
    >>> c.recommendation.most_robust  # doctest: +SKIP
    'at'
    """
    from modelsec.audits import AuditConfig
    from modelsec.core.errors import ConfigError
    from modelsec.outputs.compare import compare_and_write
    from modelsec.store import RunStore, default_store_path

    if config is not None and audit_kwargs:
        raise ConfigError(f"give config or audit options ({', '.join(audit_kwargs)}), not both")
    if config is None:
        if "eps" in audit_kwargs:
            audit_kwargs["eps"] = tuple(audit_kwargs["eps"])
        config = AuditConfig(**audit_kwargs)
    gate = None
    if policy is not None:
        from modelsec.audits.gate import check_gate_config, load_gate

        gate = load_gate(policy)
        check_gate_config(gate, config.eps, in_comparison=True)
    run_store: Any = None
    if isinstance(store, RunStore):
        run_store = store
    elif store is not False and store is not None:
        run_store = RunStore(default_store_path() if store is True else Path(store))
    return compare_and_write(
        baseline,
        hardened,
        data=data,
        config=config,
        out_dir=out,
        max_accuracy_drop=max_accuracy_drop,
        trust_model=trust_model,
        device=device,
        store=run_store,
        progress=progress,
        resume=resume,
        gate=gate,
    ).comparison


def load_model(path: str | Path | None = None, **kwargs: Any) -> LoadedModel:
    """Load a model file safely; see :func:`modelsec.models.load_model`."""
    from modelsec.models.loading import load_model as _load

    return _load(path, **kwargs)


def load_data(source: str, **kwargs: Any) -> Splits:
    """Load a data set's member / non-member / population splits; see :func:`modelsec.data.load_splits`."""
    from modelsec.data import load_splits

    return load_splits(source, **kwargs)


__all__ = ["__version__", "audit", "compare", "harden", "load_data", "load_model"]
