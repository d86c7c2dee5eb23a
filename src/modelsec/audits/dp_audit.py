"""The one-run privacy audit: check a differential-privacy claim empirically with ONE training run (Steinke, Nasr &
Jagielski 2023, "Privacy Auditing with One (1) Training Run").

Pipeline (:func:`one_run_audit`):

1. draw ``m`` canaries (:mod:`modelsec.audits.canaries`: mislabelled copies of held-out records, or random-noise
   inputs with random labels), each included independently with probability 1/2 (seeded);
2. train ONE model with the configuration under audit on the data plus the included canaries (``train_fn``);
3. score every canary on the trained model with a black-box membership score of its canary label, in float64
   (:data:`SCORES`; higher means "more likely included");
4. guess "in" on the highest scores and "out" on the lowest, abstain on the rest, and turn the number of correct
   guesses into an epsilon lower bound at 95% confidence (:mod:`modelsec.stats.dp_audit_bound`), maximised over the
   number of guesses.

Threat model: a black-box attacker who sees the final model's outputs (logits) on the canaries. The paper's
strongest audits are white-box (gradient-space canaries inserted at every step), which give larger bounds for
DP-SGD; the black-box audit is weaker, so a bound below the claim says little, but a bound ABOVE the claim is
proof, at 95% confidence, that the training does not deliver its claim: a bug.

The audit costs one training run on ``n + m/2`` records plus scoring ``m`` records: for Fashion-MNIST (50,000
members) and 1,000 canaries, about 1% more than training alone.

Several runs (:func:`run_dp_audit` with ``runs=N``, ``modelsec audit-dp --runs N``): N independent one-run audits,
each a task on an executor (:mod:`modelsec.core.executors`: this process, local processes, or Ray); run ``i`` draws
its canaries, their inclusion and its training from its own seed (:func:`run_seed`), so its numbers do not depend
on N, on the executor or on the worker that ran it. :func:`combine_runs` turns them into one bound that is still
valid at ``1 - beta`` (Bonferroni over the runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import numpy as np
import torch
from torch import nn

from modelsec.attacks.membership.signals import cross_entropy, scaled_logit
from modelsec.audits.canaries import CANARY_KINDS, Canaries, draw_canaries, with_canaries
from modelsec.core.errors import ConfigError
from modelsec.core.executors import Executor, ExecutorConfig, LocalExecutor, make_executor
from modelsec.core.options import COUNT, SEED, OneOf, check_seed
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.seeding import derived_seed, numpy_stream
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses.base import DefenseConfig, make_defense
from modelsec.models.base import eval_mode
from modelsec.results.dp_audit import DPAuditResult, DPAuditRun, DPClaim
from modelsec.stats.dp_audit_bound import CORRECTIONS, DEFAULT_BETA, one_run_bound

DEFAULT_CANARIES = 1000
DEFAULT_DELTA = 1e-5
"""The delta of the bound when the audited run makes no claim (a claim's own delta is used otherwise)."""
MAX_RUNS = 1000
"""At most this many runs in one audit (each is a training run)."""


def run_seed(seed: int, index: int) -> int:
    """The seed of run ``index`` of an audit seeded with ``seed``: ``seed`` itself for run 0 (so that the first
    run of an audit of several is the one-run audit of the same seed), ``derived_seed(seed, "dp-audit-run",
    index)`` for the others: a function of the seed and the index alone, never of the number of runs or of where
    they ran.

    >>> run_seed(7, 0), run_seed(7, 1) == run_seed(7, 1) != run_seed(7, 2)
    (7, True)
    """
    return int(seed) if index == 0 else derived_seed(seed, "dp-audit-run", index)


def _negative_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -cross_entropy(logits, labels)


SCORES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "scaled-logit": scaled_logit,
    "loss": _negative_loss,
}
"""Membership scores of a canary's label from the logits, float64 and distinct for saturated models
(:mod:`modelsec.attacks.membership.signals`). ``scaled-logit`` (LiRA's ``log(p / (1 - p))``, the default) and ``loss``
(the negative cross-entropy ``log p``) are both increasing in ``p``, so they rank the canaries alike and give the
same bound; the scaled logit spreads the confident ones apart in the histograms."""


@dataclass(frozen=True, kw_only=True)
class DPAuditOptions:
    """The one-run audit's own options, beside the configuration under audit: the keyword arguments of
    :func:`run_dp_audit` of the same names and defaults, which checks them. The fields follow the options
    convention of :mod:`modelsec.core.options`: each is an option of ``modelsec audit-dp``.

    Args:
        canaries: canaries, each included with probability 1/2 (mislabelled ones are copied from the population
            split).
        canary_kind: "mislabelled" (population records with a wrong label) or "out-of-distribution" (uniform-noise
            inputs with random labels).
        score: the membership score of a canary's label (:data:`SCORES`: both rank the canaries alike).
        correction: "none" (the best bound over the numbers of guesses, as the paper) or "bonferroni" (corrected
            for trying them).
        seed: seeds the canaries, which of them are included, and the training run.
        runs: independent one-run audits (each one training run, with its own canaries and seed; run 0 is the
            one-run audit of --seed): their combined bound is the largest of their bounds, each tested at 5% /
            runs, so it is still a 95% bound.
    """

    canaries: Annotated[int, COUNT] = DEFAULT_CANARIES
    canary_kind: Annotated[str, OneOf(*CANARY_KINDS)] = "mislabelled"
    score: Annotated[str, OneOf(*SCORES)] = "scaled-logit"
    correction: Annotated[str, OneOf(*CORRECTIONS)] = "none"
    seed: Annotated[int, SEED] = 0
    runs: Annotated[int, COUNT] = 1


@dataclass(frozen=True)
class AuditTraining:
    """What ``train_fn`` returns: the trained model's ``logits`` function (inputs ``(n, *shape)`` float32 ->
    ``(n, classes)``), the DP ``claim`` it makes (None: no claim), and ``info`` for the record (defense, config,
    accuracy)."""

    logits: Callable[[np.ndarray], np.ndarray]
    claim: DPClaim | None = None
    info: dict[str, Any] = field(default_factory=dict)


TrainFn = Callable[[Dataset], AuditTraining]
"""Trains one model on the given training set (the data plus the included canaries) with the configuration under
audit."""


def module_logits(
    module: nn.Module, *, device: str = "cpu", batch_size: int = 512
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``logits`` function for :class:`AuditTraining` over a trained ``module`` (eval mode, no gradients)."""
    dev = torch.device(device)

    @torch.no_grad()
    def logits(x: np.ndarray) -> np.ndarray:
        out = []
        with eval_mode(module):
            for i in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(dev)
                out.append(module(xb).detach().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    return logits


def defense_trainer(
    defense: str,
    config: Mapping[str, Any] | DefenseConfig | None = None,
    *,
    arch: str | None = None,
    test: Dataset | None = None,
    population: Dataset | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> TrainFn:
    """A ``train_fn`` that trains the built-in architecture ``arch`` (default: by input shape) with the registered
    ``defense`` (``dp-sgd``, ``standard``, ...) and its ``config`` (validated now), as ``modelsec harden`` would; the
    claim is the defense's differential-privacy guarantee, if it makes one. ``test``: held-out data for the accuracy
    in the record. Each call trains a fresh model (initialised under the config's seed)."""
    from modelsec.core.seeding import seeded
    from modelsec.models.zoo import build_architecture, default_architecture

    cfg = make_defense(defense, config).config

    def train(data: Dataset) -> AuditTraining:
        impl = make_defense(defense, cfg)
        impl.use_population(population)
        impl.check_data(data)
        arch_name = arch or default_architecture(data.input_shape)
        with seeded(cfg.seed):
            module = build_architecture(arch_name, data.input_shape, data.num_classes)
        history = impl.fit(module, data, test=test, device=device, progress=progress)
        guarantees = impl.guarantees()
        info = {
            "defense": impl.name,
            "config": cfg.to_dict(),
            "arch": arch_name,
            "train_records": len(data),
            "guarantees": guarantees.summary,
            "test_accuracy": history.test_accuracy[-1] if history.test_accuracy else None,
            "train_accuracy": history.train_accuracy[-1] if history.train_accuracy else None,
            "training_seconds": history.seconds,
        }
        return AuditTraining(module_logits(module, device=device), DPClaim.from_guarantees(guarantees), info)

    return train


def check_audit_choices(canary_kind: str, score: str, correction: str) -> None:
    """The names of the audit's choices (ConfigError naming the one that is not known)."""
    if canary_kind not in CANARY_KINDS:
        raise ConfigError(f"canary kind must be one of {', '.join(CANARY_KINDS)}, got {canary_kind!r}")
    if score not in SCORES:
        raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")


def one_run_audit(
    train_fn: TrainFn,
    data: Dataset,
    *,
    canaries: int = DEFAULT_CANARIES,
    canary_kind: str = "mislabelled",
    canary_source: Dataset | None = None,
    seed: int = 0,
    score: str = "scaled-logit",
    delta: float | None = None,
    beta: float = DEFAULT_BETA,
    grid: tuple[int, ...] | None = None,
    correction: str = "none",
    progress: Progress | None = None,
) -> DPAuditResult:
    """Audit the training behind ``train_fn`` with one run: ``canaries`` canaries of ``canary_kind``, half of them
    (in expectation) added to ``data``; returns the claim beside the empirical epsilon lower bound.

    Args:
        train_fn: trains one model on the training set it is given (:class:`AuditTraining` back); e.g.
            :func:`defense_trainer`.
        data: the training data (without canaries).
        canary_source: held-out records to copy as mislabelled canaries; ``None`` takes them from ``data`` (and
            trains without those records, so that no canary's original stays in the training set).
        seed: seeds the canaries and who is included (the training run is seeded by its own configuration).
        score: a name in :data:`SCORES`.
        delta: the delta of the bound; default: the claim's delta, or :data:`DEFAULT_DELTA` without a claim. A
            delta other than the claim's is refused (the bound would test another claim).
        beta, grid, correction: the test's level ``1 - beta``, the numbers of guesses tried and the correction for
            trying several (:func:`modelsec.stats.dp_audit_bound.one_run_bound`).

    >>> import numpy as np
    >>> from modelsec.data.dataset import Dataset
    >>> rng = np.random.default_rng(0)
    >>> data = Dataset("toy", rng.random((50, 4), dtype=np.float32), rng.integers(0, 2, 50), 2, (0.0, 1.0))
    >>> def oracle(train):  # a "model" that recites the label of every record it trained on: no privacy at all
    ...     seen = {row.tobytes(): label for row, label in zip(train.x, train.y)}
    ...     recite = lambda row: 9.0 * np.eye(2)[seen[row.tobytes()]] if row.tobytes() in seen else np.zeros(2)
    ...     return AuditTraining(lambda x: np.array([recite(row) for row in x]))
    >>> result = one_run_audit(oracle, data, canaries=200, canary_kind="out-of-distribution")
    >>> result.lower_bound > 3, result.passed, result.claimed_epsilon
    (True, True, None)
    """
    progress = progress or NullProgress()
    check_audit_choices(canary_kind, score, correction)
    if not 0 < beta < 0.5:
        raise ConfigError(f"beta must be in (0, 0.5) (the test's level is 1 - beta), got {beta}")
    if delta is not None and not 0 <= delta < 1:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    rng = numpy_stream(seed, 0x0AE0)  # the canaries' stream
    notes: list[str] = []
    train_data = data
    if canary_kind == "mislabelled" and canary_source is None:
        if canaries >= len(data):
            raise ConfigError(f"{canaries} mislabelled canaries need more than the {len(data)} records to copy")
        taken = np.sort(rng.choice(len(data), size=canaries, replace=False))
        canary_source = data.subset(taken, name=f"{data.name}/canary-source")
        train_data = data.subset(np.setdiff1d(np.arange(len(data)), taken), name=data.name)
        notes.append(f"{canaries} records of the training data were held out as the canaries' originals")
    drawn: Canaries = draw_canaries(canary_kind, canaries, like=data, rng=rng, pool=canary_source)
    training_set = with_canaries(train_data, drawn)
    progress.note(
        f"one-run audit: {int(drawn.included.sum())} of {canaries} {canary_kind} canaries join "
        f"{len(train_data)} training records"
    )

    start = time.perf_counter()
    trained = train_fn(training_set)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    logits = np.asarray(trained.logits(drawn.data.x), dtype=np.float64)
    if logits.shape != (canaries, data.num_classes) or not np.isfinite(logits).all():
        raise RuntimeError(
            f"the trained model gave logits of shape {logits.shape} (finite: {np.isfinite(logits).all()})"
        )
    scores = np.asarray(SCORES[score](logits, drawn.data.y), dtype=np.float64)
    score_seconds = time.perf_counter() - start

    claim = trained.claim
    if claim is not None and delta is not None and delta != claim.delta:
        raise ConfigError(f"the bound must be at the claim's delta ({claim.delta:g}), got delta={delta:g}")
    bound_delta = claim.delta if claim is not None else (DEFAULT_DELTA if delta is None else delta)
    start = time.perf_counter()
    bound = one_run_bound(scores, drawn.included, delta=bound_delta, beta=beta, grid=grid, correction=correction)
    bound_seconds = time.perf_counter() - start

    passed = claim is None or bound.epsilon <= claim.epsilon
    if claim is not None and claim.delta * canaries > 0.1:
        notes.append(
            f"delta * canaries = {claim.delta * canaries:.3g}: the delta term of the bound dominates; the audit "
            "can hardly bound epsilon at this delta"
        )
    return DPAuditResult(
        claimed_epsilon=None if claim is None else claim.epsilon,
        delta=bound_delta,
        accountant=None if claim is None else claim.accountant,
        epsilons={} if claim is None else dict(claim.epsilons),
        lower_bound=bound.epsilon,
        k_plus=bound.best.k_plus,
        k_minus=bound.best.k_minus,
        r=bound.best.r,
        v=bound.best.v,
        canaries=canaries,
        included=int(drawn.included.sum()),
        canary_kind=canary_kind,
        score=score,
        beta=beta,
        level=bound.level,
        correction=correction,
        tests=bound.tests,
        included_scores=scores[drawn.included].tolist(),
        excluded_scores=scores[~drawn.included].tolist(),
        train_seconds=train_seconds,
        score_seconds=score_seconds,
        bound_seconds=bound_seconds,
        seed=int(seed),
        passed=bool(passed),
        claim=claim,
        training=dict(trained.info),
        grid=[{"k_plus": g.k_plus, "k_minus": g.k_minus, "r": g.r, "v": g.v, "epsilon": g.epsilon} for g in bound.grid],
        notes=notes,
    )


def combine_runs(results: Sequence[DPAuditResult], *, beta: float = DEFAULT_BETA) -> DPAuditResult:
    """One result of ``N = len(results)`` independent one-run audits of the same training, each bounded at level
    ``1 - beta / N``: the combined lower bound is the largest of their bounds, valid at ``1 - beta``.

    Why (Bonferroni's inequality, the union bound): if the training delivers its claim, each run's bound exceeds
    the claimed epsilon with probability at most ``beta / N`` (Steinke, Nasr & Jagielski 2023, Theorem 3.1, at
    level ``beta / N``), so the largest of the N bounds exceeds it with probability at most
    ``N * beta / N = beta``, however the runs depend on each other. Taking the maximum lets the most revealing run
    speak, at the price of a slightly smaller bound per run (e.g. 1,000 perfect guesses at delta 1e-5: 5.78 at 5%,
    5.37 at 5% / 4). Pooling the canaries of all runs into one test instead would bound the epsilon of the N runs
    composed, not of one training run.

    The runs' claims can differ a little (DP-SGD's sample rate is its batch size over the records it trains on,
    which include the canaries that joined); every run then also makes the largest of them (an eps-DP run is
    eps'-DP for every eps' >= eps), which ``claimed_epsilon`` is and ``passed`` compares the combined bound with.
    One run's result comes back unchanged (a one-run audit's file is as it always was); see
    :class:`~modelsec.results.dp_audit.DPAuditResult` for what the top-level fields hold for several.
    """
    n = len(results)
    if n == 0:
        raise ValueError("no runs to combine")
    if n == 1:
        return results[0]
    if any(r.beta != beta / n for r in results):
        raise ValueError(
            f"each of {n} runs must be bounded at beta / {n} = {beta / n:g}, got {[r.beta for r in results]}"
        )
    if len({r.delta for r in results}) > 1:
        raise ValueError(f"the runs' bounds are at different deltas: {sorted({r.delta for r in results})}")
    claims = [r.claim for r in results if r.claim is not None]
    if claims and len(claims) != n:
        raise ValueError("some runs make a DP claim and some do not: not runs of the same training")
    evidence = max(range(n), key=lambda i: (results[i].lower_bound, -i))  # the first of the largest
    claim = max(claims, key=lambda c: c.epsilon) if claims else None  # the first of the largest
    combined = results[evidence].lower_bound
    runs = [
        DPAuditRun(
            index=i,
            seed=r.seed,
            lower_bound=r.lower_bound,
            claimed_epsilon=r.claimed_epsilon,
            passed=r.passed,
            k_plus=r.k_plus,
            k_minus=r.k_minus,
            r=r.r,
            v=r.v,
            included=r.included,
            level=r.level,
            tests=r.tests,
            test_accuracy=r.training.get("test_accuracy"),
            train_accuracy=r.training.get("train_accuracy"),
            train_seconds=r.train_seconds,
            score_seconds=r.score_seconds,
            bound_seconds=r.bound_seconds,
            included_scores=list(r.included_scores),
            excluded_scores=list(r.excluded_scores),
        )
        for i, r in enumerate(results)
    ]
    notes = [
        f"{n} independent runs, each with its own canaries and seed, each bounded at level 1 - {beta:g}/{n}; the "
        f"combined bound is the largest of theirs, valid at {1 - beta:.0%} (Bonferroni over the runs); the "
        f"guesses, scores and training shown are run {evidence}'s",
        *(f"run {evidence}: {note}" for note in results[evidence].notes),
    ]
    claimed = sorted({c.epsilon for c in claims})
    if len(claimed) > 1:
        notes.append(
            f"the runs' claims differ (epsilon {claimed[0]:.6g} to {claimed[-1]:.6g}: a claim depends on how many "
            "records the run trained on); the combined bound is compared with the largest, which every run makes"
        )
    return replace(
        results[evidence],
        claimed_epsilon=None if claim is None else claim.epsilon,
        accountant=None if claim is None else claim.accountant,
        epsilons={} if claim is None else dict(claim.epsilons),
        claim=claim,
        beta=beta,
        seed=results[0].seed,
        passed=claim is None or combined <= claim.epsilon,
        train_seconds=sum(r.train_seconds for r in results),
        score_seconds=sum(r.score_seconds for r in results),
        bound_seconds=sum(r.bound_seconds for r in results),
        training=dict(results[evidence].training),
        notes=notes,
        runs=runs,
        run_count=n,
        combined_lower_bound=combined,
        evidence_run=evidence,
    )


@dataclass(frozen=True)
class RunPlan:
    """What every run of :func:`run_dp_audit` shares beside the data, in plain values (it travels to each task):
    the defense under audit by registered name and its config's fields, the architecture, the audit's choices,
    its seed, each run's ``beta`` (the audit's over the number of runs), the device and each task's torch
    threads."""

    defense: str
    config: dict[str, Any]
    arch: str | None
    canaries: int
    canary_kind: str
    seed: int
    score: str
    correction: str
    beta: float
    device: str
    threads: int


def _canary_pool(population: Dataset, canaries: int, canary_kind: str, seed: int) -> tuple[Dataset | None, Dataset]:
    """The mislabelled canaries' originals, ``canaries`` population records drawn with ``seed`` (None for
    out-of-distribution canaries), and the rest of the population, which the defense may use."""
    if canary_kind != "mislabelled":
        return None, population
    taken = numpy_stream(seed, 0x9001).permutation(len(population))
    pool = population.subset(np.sort(taken[:canaries]), name=f"{population.name}/canary-source")
    return pool, population.subset(np.sort(taken[canaries:]))


def _writable(data: Dataset) -> Dataset:
    """``data``, or a copy of it where its arrays are read-only (as Ray's object store hands them out)."""
    if data.x.flags.writeable and data.y.flags.writeable:
        return data
    return replace(data, x=data.x.copy(), y=data.y.copy())


def audit_one_run(shared: Mapping[str, Any], plan: RunPlan, index: int) -> DPAuditResult:
    """A task (:mod:`modelsec.core.executors`): run ``index`` of :func:`run_dp_audit`, a one-run audit seeded
    with ``run_seed(plan.seed, index)`` (its canaries, their originals and who is included) whose training is
    seeded with ``run_seed(<the config's seed>, index)``, bounded at ``plan.beta``, with ``plan.threads`` torch
    threads wherever it runs (so that a run's numbers are the same on every executor).

    ``shared``: the ``members`` (the training set without canaries), the ``population`` (the canaries' originals
    and the defense's population records) and the ``nonmembers`` (the test accuracy); ``progress`` only where the
    runs go one after another in this process. The defense is rebuilt from its name and its config's fields: no
    training code travels."""
    seed = run_seed(plan.seed, index)
    config = make_defense(plan.defense, {**plan.config, "seed": run_seed(plan.config["seed"], index)}).config
    pool, population = _canary_pool(_writable(shared["population"]), plan.canaries, plan.canary_kind, seed)
    progress = shared.get("progress")
    threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        train_fn = defense_trainer(
            plan.defense,
            config,
            arch=plan.arch,
            test=_writable(shared["nonmembers"]),
            population=population,
            device=plan.device,
            progress=progress,
        )
        return one_run_audit(
            train_fn,
            _writable(shared["members"]),
            canaries=plan.canaries,
            canary_kind=plan.canary_kind,
            canary_source=pool,
            seed=seed,
            score=plan.score,
            beta=plan.beta,
            correction=plan.correction,
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads)


def run_dp_audit(
    defense: str,
    *,
    data: str | Splits,
    arch: str | None = None,
    config: Mapping[str, Any] | DefenseConfig | None = None,
    canaries: int = DEFAULT_CANARIES,
    canary_kind: str = "mislabelled",
    seed: int = 0,
    score: str = "scaled-logit",
    correction: str = "none",
    runs: int = 1,
    members: int | None = None,
    split_seed: int = 0,
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    device: str = "cpu",
    executor: ExecutorConfig | Executor | None = None,
    progress: Progress | None = None,
) -> DPAuditResult:
    """``modelsec audit-dp``: audit ``defense`` (with ``config``) on a data set's members split, with mislabelled
    canaries copied from ``canaries`` records of its population split (records the model never trains on
    otherwise; a defense that uses population records gets the rest), the non-members for the test accuracy.
    Writes no output: :mod:`modelsec.outputs.dp_audit` writes ``dp_audit.json`` and ``dp_audit.html``.

    ``runs``: independent one-run audits (:func:`audit_one_run`; run 0 is the one-run audit of ``seed`` and the
    config's seed), each a task on ``executor`` (default: local, :mod:`modelsec.core.executors`; the data go to
    the workers once), combined by :func:`combine_runs`. Each task trains with ``cpus_per_task`` torch threads
    (default 1), wherever it runs, so the numbers do not depend on the executor."""
    from modelsec.data import load_splits
    from modelsec.defenses.training import check_run_options, training_set

    impl = make_defense(defense, config)  # options validated before the data loads
    check_run_options(members=members, device=device, split_seed=split_seed)
    check_seed(seed, "--seed")
    check_audit_choices(canary_kind, score, correction)
    if canaries < 1:
        raise ConfigError(f"--canaries must be >= 1, got {canaries}")
    if not 1 <= runs <= MAX_RUNS:
        raise ConfigError(f"--runs must be from 1 to {MAX_RUNS} (each run is a training run), got {runs}")
    runner = executor if isinstance(executor, Executor) else make_executor(executor)
    if isinstance(data, Splits):
        splits = data
    else:
        splits = load_splits(data, seed=split_seed, data_dir=data_dir, label_column=label_column, bounds=bounds)
    train = training_set(splits, members)
    if canary_kind == "mislabelled" and canaries > len(splits.population):
        raise ConfigError(
            f"{canaries} mislabelled canaries need {canaries} population records to copy, the data has "
            f"{len(splits.population)}; use fewer canaries or --canary-kind out-of-distribution"
        )
    plan = RunPlan(
        defense=defense,
        config=impl.config.to_dict(),
        arch=arch,
        canaries=canaries,
        canary_kind=canary_kind,
        seed=seed,
        score=score,
        correction=correction,
        beta=DEFAULT_BETA / runs,
        device=device,
        threads=runner.config.threads_per_task,
    )
    shared: dict[str, Any] = {"members": train, "population": splits.population, "nonmembers": splits.nonmembers}
    if isinstance(runner, LocalExecutor) and runner.parallel(runs) == 1:
        shared["progress"] = progress  # the runs train here, one after another: their epochs' progress shows
    results = runner.map(
        audit_one_run,
        [(plan, i) for i in range(runs)],
        shared=shared,
        description="one-run audit" if runs == 1 else f"{runs} one-run audits",
        progress=progress,
    )
    result = combine_runs(results, beta=DEFAULT_BETA)
    result.training["data"] = {"source": splits.source, "split_seed": splits.seed, "members_used": len(train)}
    return result
