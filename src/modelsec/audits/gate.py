"""The policy gate: a policy file (TOML) of rules an audit's result must meet, and their evaluation.

A CI job runs ``modelsec audit --policy policy.toml`` on every candidate model and fails when a rule fails
(exit code 4). The file::

    [robustness]
    min_robust_accuracy = { eps = 0.1, value = 0.5 }          # worst case per sample at that eps, at least
    require_resolved_checks = true                             # no unresolved sanity flag
    [privacy]
    max_tpr_at_fpr = { fpr = 0.001, value = 0.01 }             # the strongest membership attack, at most
    max_auc = { value = 0.6, bound = "upper" }
    max_epsilon_lower_bound = { value = 1.0 }

A rule may compare with a baseline run instead of a constant (``modelsec audit --baseline RUN_ID|result.json``)::

    [robustness]
    max_robust_accuracy_drop = { eps = 0.1, significance = 0.05, max_value = 0.02 }

fails when the robust accuracy at ``eps`` fell significantly against the baseline: McNemar's exact test
(:func:`modelsec.stats.mcnemar.mcnemar_exact`) on the paired per-record outcomes (robust or not; both audits attacked
the same records), one-sided since only a fall fails: p = P(X >= b), X ~ Binomial(b + c, 1/2), ``b`` the records
robust in the baseline but not now, ``c`` the reverse. The rule fails when p < ``significance`` and the fall is
larger than ``max_value`` (a minimum effect size, default 0). The per-record flags come from each run's
``adversarial.npz`` (:class:`PairedRecords`); two runs on other records are refused (ConfigError).

``min_robust_accuracy`` and ``max_tpr_at_fpr`` also take a list of tables (``[[robustness.min_robust_accuracy]]``),
one rule each. ``bound`` says what is compared with ``value``: the point estimate (``"point"``, the default) or the
end of its confidence interval that makes the rule harder to pass (``"lower"`` for a minimum, ``"upper"`` for a
maximum), for a gate that only passes what the evidence supports.

:func:`parse_gate` checks the file completely before any work (unknown sections and keys, wrong types, values out
of range: :class:`~modelsec.core.errors.ConfigError` naming the key); :func:`check_gate_config` checks that the
audit will measure each eps a rule names; :func:`evaluate_gate` evaluates the rules on a result (a pure function;
a rule asking for a number the result does not hold, such as a privacy rule on an audit without a privacy part, is
a ConfigError). The module is named for the gate because "policy" already means an RL agent's policy in modelsec
(:mod:`modelsec.audits.policy_audit`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelsec.core.errors import ConfigError, ModelsecError, printable
from modelsec.results.audit import AuditResult, MembershipAttackResult, PrivacyResult, RobustnessResult, eps_key
from modelsec.results.dp_audit import DPAuditResult
from modelsec.results.gate import LOWER, POINT, UPPER, BaselineComparison, GateOutcome, RuleOutcome
from modelsec.stats.intervals import Interval
from modelsec.stats.mcnemar import GREATER, mcnemar_exact

if TYPE_CHECKING:
    from modelsec.store.runs import RunStore

AT_LEAST = ">="
AT_MOST = "<="

GatedResult = AuditResult | DPAuditResult
"""What a gate evaluates: an audit's result (``audit``, each model of ``compare``) or a one-run DP audit's
(``audit-dp``, which answers only :data:`DP_AUDIT_RULES`)."""


@dataclass(frozen=True)
class MinRobustAccuracy:
    """``[robustness] min_robust_accuracy``: the worst-case robust accuracy at ``eps`` (per sample, over every
    attack) is at least ``value``; ``bound`` ``"point"`` or ``"lower"`` (the lower end of its interval)."""

    eps: float
    value: float
    bound: str = POINT

    @property
    def name(self) -> str:
        return f"robustness.min_robust_accuracy(eps={self.eps:g})"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        robustness = _robustness(result, self.name)
        key = eps_key(self.eps)
        if key not in robustness.robust_accuracy:
            ran = ", ".join(robustness.robust_accuracy) or "none"
            raise ConfigError(
                f"policy rule {self.name}: the audit did not run eps={self.eps:g} (it ran: {ran}); "
                "add it to --eps or change the rule"
            )
        interval = robustness.robust_ci.get(key)
        return _outcome(
            self.name, robustness.robust_accuracy[key], interval, self.bound, AT_LEAST, self.value,
            f"worst-case robust accuracy at eps={self.eps:g}", _percent,
        )  # fmt: skip


@dataclass(frozen=True)
class RequireResolvedChecks:
    """``[robustness] require_resolved_checks = true``: no sanity check fired without its remedy resolving it (an
    unresolved flag means the robustness numbers are likely too high, or not trustworthy)."""

    name = "robustness.require_resolved_checks"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        robustness = _robustness(result, self.name)
        unresolved = [f.check for f in robustness.flags if not f.resolved]
        names = f" ({', '.join(unresolved)})" if unresolved else ""
        message = f"unresolved sanity flags: {len(unresolved)}{names}, required none"
        return RuleOutcome(self.name, float(len(unresolved)), None, POINT, AT_MOST, 0.0, not unresolved, message)


@dataclass(frozen=True)
class MaxTprAtFpr:
    """``[privacy] max_tpr_at_fpr``: the strongest membership attack's TPR at ``fpr`` is at most ``value``;
    ``bound`` ``"point"`` or ``"upper"``. The strongest: the attack whose compared value is the largest."""

    fpr: float
    value: float
    bound: str = POINT

    @property
    def name(self) -> str:
        return f"privacy.max_tpr_at_fpr(fpr={self.fpr:g})"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        key = repr(float(self.fpr))
        attacks = [a for a in _privacy(result, self.name).attacks if key in a.tpr_at_fpr]
        if not attacks:
            measured = sorted({k for a in _privacy(result, self.name).attacks for k in a.tpr_at_fpr}, key=float)
            raise ConfigError(
                f"policy rule {self.name}: the result has no TPR at fpr={self.fpr:g} "
                f"(it has: {', '.join(measured) or 'none'})"
            )
        return _strongest(
            self.name, attacks, lambda a: (a.tpr_at_fpr[key], a.tpr_ci.get(key)), self.bound, self.value,
            f"TPR at {self.fpr * 100:g}% FPR", _percent,
        )  # fmt: skip


@dataclass(frozen=True)
class MaxAuc:
    """``[privacy] max_auc``: the strongest membership attack's AUC is at most ``value``; ``bound`` ``"point"`` or
    ``"upper"``."""

    value: float
    bound: str = POINT
    name = "privacy.max_auc"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        attacks = _privacy(result, self.name).attacks
        return _strongest(self.name, attacks, lambda a: (a.auc, a.auc_ci), self.bound, self.value, "AUC", _plain)


@dataclass(frozen=True)
class MaxEpsilonLowerBound:
    """``[privacy] max_epsilon_lower_bound``: the largest empirical epsilon lower bound of any membership attack
    (a 95% bound already, so the point is what is compared) is at most ``value``; for ``audit-dp``, the canaries'
    lower bound (Steinke, Nasr & Jagielski 2023)."""

    value: float
    name = "privacy.max_epsilon_lower_bound"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        if isinstance(result, DPAuditResult):  # audit-dp: the canaries' bound (several runs: the combined one)
            what = f"empirical epsilon lower bound (canaries, at delta={result.delta:g})"
            return _outcome(self.name, result.lower_bound, None, POINT, AT_MOST, self.value, what, _plain)
        attacks = [a for a in _privacy(result, self.name).attacks if a.epsilon_lower_bound is not None]
        if not attacks:
            raise ConfigError(f"policy rule {self.name}: the result records no epsilon lower bound")
        return _strongest(
            self.name, attacks, lambda a: (float(a.epsilon_lower_bound or 0.0), None), POINT, self.value,
            "empirical epsilon lower bound", _plain,
        )  # fmt: skip


@dataclass(frozen=True)
class MaxClaimedEpsilon:
    """``[dp] max_claimed_epsilon``: the model's differential-privacy claim is an epsilon of at most ``value`` (at
    the claim's own delta): the claim a DP-SGD model records (``modelsec audit``, ``compare``), or the claim of the
    training under audit (``audit-dp``). A model that claims no DP fails: nothing bounds its leakage. The claim is
    the accountant's, a proven bound under its assumptions; whether the training delivers it is what ``audit-dp``'s
    lower bound checks."""

    value: float
    name = "dp.max_claimed_epsilon"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        epsilon: float | None
        delta: float | None
        if isinstance(result, DPAuditResult):
            epsilon, delta = result.claimed_epsilon, result.delta
        else:
            epsilon, delta = result.model.dp_epsilon, result.model.dp_delta
        if epsilon is None:
            message = (
                f"claimed DP epsilon: none (the model makes no differential-privacy claim), required <= {self.value:g}"
            )
            return RuleOutcome(self.name, None, None, POINT, AT_MOST, self.value, False, message)
        at = "" if delta is None else f" at delta={delta:g}"
        return _outcome(self.name, epsilon, None, POINT, AT_MOST, self.value, f"claimed DP epsilon{at}", _plain)


@dataclass(frozen=True)
class MaxRobustAccuracyDrop:
    """``[robustness] max_robust_accuracy_drop``: the worst-case robust accuracy at ``eps`` did not fall
    significantly against the baseline run: it fails when McNemar's one-sided exact p-value on the paired records
    is below ``significance`` and the fall is larger than ``max_value``. Needs a baseline (``--baseline``)."""

    eps: float
    significance: float = 0.05
    max_value: float = 0.0

    @property
    def name(self) -> str:
        return f"robustness.max_robust_accuracy_drop(eps={self.eps:g})"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        raise ConfigError(f"policy rule {self.name} compares with a baseline run: give --baseline RUN_ID|result.json")

    def compare(self, records: PairedRecords | None, baseline: Baseline) -> RuleOutcome:
        """The rule on this audit's per-record flags ``records`` against ``baseline``'s."""
        if records is None:
            raise ConfigError(f"policy rule {self.name}: the audit has no per-record robust flags (adversarial.npz)")
        _check_paired(records, baseline)
        now = records.robust_at(self.eps, f"policy rule {self.name}: the audit")
        before = baseline.records.robust_at(self.eps, f"policy rule {self.name}: the baseline {baseline.source}")
        what = (f"robust accuracy at eps={self.eps:g}", "robust")
        return _fall(self.name, what, self.eps, before, now, baseline, self.significance, self.max_value)


@dataclass(frozen=True)
class MaxCleanAccuracyDrop:
    """``[robustness] max_clean_accuracy_drop``: clean accuracy did not fall significantly against the baseline run,
    by the same McNemar test on the paired records' clean predictions as :class:`MaxRobustAccuracyDrop` (its
    outcome's ``eps`` is 0: a clean prediction is the robust one at eps 0). Needs a baseline (``--baseline``)."""

    significance: float = 0.05
    max_value: float = 0.0

    @property
    def name(self) -> str:
        return "robustness.max_clean_accuracy_drop"

    def evaluate(self, result: GatedResult) -> RuleOutcome:
        raise ConfigError(f"policy rule {self.name} compares with a baseline run: give --baseline RUN_ID|result.json")

    def compare(self, records: PairedRecords | None, baseline: Baseline) -> RuleOutcome:
        """The rule on this audit's per-record clean predictions ``records`` against ``baseline``'s."""
        if records is None:
            raise ConfigError(f"policy rule {self.name}: the audit has no per-record predictions (adversarial.npz)")
        _check_paired(records, baseline)
        now = records.correct_flags(f"policy rule {self.name}: the audit")
        before = baseline.records.correct_flags(f"policy rule {self.name}: the baseline {baseline.source}")
        return _fall(self.name, ("clean accuracy", "correct"), 0.0, before, now, baseline, self.significance,
                     self.max_value)  # fmt: skip


def _fall(
    name: str,
    what: tuple[str, str],
    eps: float,
    before: np.ndarray,
    now: np.ndarray,
    baseline: Baseline,
    significance: float,
    max_value: float,
) -> RuleOutcome:
    """A baseline rule's outcome: the share of records with a flag (``what``: the rate's name and the flag's
    adjective) ``before`` (the baseline) and ``now``, McNemar's one-sided exact test of a fall on the paired flags,
    failing when p < ``significance`` and the fall is larger than ``max_value``."""
    b = int(np.count_nonzero(before & ~now))
    c = int(np.count_nonzero(~before & now))
    p = mcnemar_exact(b, c, GREATER)
    n = int(now.size)
    acc_before, acc_now = float(before.mean()), float(now.mean())
    drop = acc_before - acc_now
    passed = not (p < significance and drop > max_value)
    effect = f" and more than {_percent(max_value)}" if max_value > 0 else ""
    rate, flag = what
    message = (
        f"{rate}: {_percent(acc_now)} against {_percent(acc_before)} in the baseline (fall {_percent(drop)}; {b} "
        f"records {flag} only in the baseline, {c} only now, of {n}; McNemar one-sided p = {p:.3g}), required no "
        f"fall significant at {significance:g}{effect}"
    )
    comparison = BaselineComparison(baseline.source, eps, n, b, c, p, acc_before, acc_now, significance)
    return RuleOutcome(name, drop, None, POINT, AT_MOST, max_value, passed, message, baseline=comparison)


Rule = (
    MinRobustAccuracy
    | RequireResolvedChecks
    | MaxTprAtFpr
    | MaxAuc
    | MaxEpsilonLowerBound
    | MaxClaimedEpsilon
    | MaxRobustAccuracyDrop
    | MaxCleanAccuracyDrop
)


@dataclass(frozen=True)
class Gate:
    """The rules of a policy file, in the file's order; ``source``: the file as given (``None``: built in code)."""

    rules: tuple[Rule, ...]
    source: str | None = None

    @property
    def eps(self) -> list[float]:
        """The eps the robustness rules need the audit to run."""
        return [r.eps for r in self.rules if isinstance(r, MinRobustAccuracy | MaxRobustAccuracyDrop)]

    @property
    def needs_baseline(self) -> bool:
        """A rule compares with a baseline run (``--baseline``)."""
        return any(_is_baseline_rule(r) for r in self.rules)

    def without_baseline_rules(self) -> Gate:
        """The gate less its baseline rules: what a comparison checks its baseline model against."""
        return replace(self, rules=tuple(r for r in self.rules if not _is_baseline_rule(r)))


def _is_baseline_rule(rule: Rule) -> bool:
    return isinstance(rule, MaxRobustAccuracyDrop | MaxCleanAccuracyDrop)


DP_AUDIT_RULES = (MaxEpsilonLowerBound, MaxClaimedEpsilon)
"""The rules ``audit-dp`` answers: it trains with canaries and bounds epsilon, measuring nothing else."""


def _dp_audit_rules() -> str:
    return "privacy.max_epsilon_lower_bound, dp.max_claimed_epsilon"


# -- the baseline ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # arrays: compare ``records`` and the flags themselves
class PairedRecords:
    """An audit's per-record worst-case robust flags, from its ``adversarial.npz``
    (:meth:`~modelsec.audits.robustness.RobustnessRun.npz_arrays`): ``records``, a SHA-256 of the attacked records
    (inputs and labels) so that two runs are compared only on the same records; ``eps`` and ``robust``, the flags
    per eps in the same order."""

    records: str
    eps: tuple[float, ...]
    robust: tuple[np.ndarray, ...]
    correct: np.ndarray | None = None  # per record, classified correctly before any attack (pred_clean == y)

    def correct_flags(self, who: str) -> np.ndarray:
        """The per-record clean-correctness flags; ConfigError naming ``who`` when its npz has no ``pred_clean``."""
        if self.correct is None:
            raise ConfigError(f"{who} has no clean predictions (pred_clean) in its adversarial.npz")
        return self.correct

    def robust_at(self, eps: float, who: str) -> np.ndarray:
        """The flags at ``eps`` (as booleans); ConfigError naming ``who`` when that run did not attack at it."""
        for e, flags in zip(self.eps, self.robust, strict=True):
            if eps_key(e) == eps_key(eps):
                return flags
        ran = ", ".join(f"{e:g}" for e in self.eps) or "none"
        raise ConfigError(f"{who} did not run eps={eps:g} (it ran: {ran})")


def paired_records(arrays: Mapping[str, np.ndarray], where: str = "adversarial.npz") -> PairedRecords:
    """The :class:`PairedRecords` of an audit's ``adversarial.npz`` arrays; ConfigError naming ``where`` when an
    array is missing or the flags do not match the records."""
    missing = [k for k in ("x", "y", "eps") if k not in arrays]
    if missing:
        raise ConfigError(f"{where} is not an audit's adversarial.npz: no array {missing[0]!r}")
    x, y = np.ascontiguousarray(arrays["x"]), np.ascontiguousarray(arrays["y"])
    digest = hashlib.sha256()
    for a in (x, y):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    eps = tuple(float(e) for e in np.asarray(arrays["eps"]).ravel())
    robust = []
    for i in range(len(eps)):
        if f"robust_{i}" not in arrays:
            raise ConfigError(f"{where} is not an audit's adversarial.npz: no array 'robust_{i}'")
        flags = np.asarray(arrays[f"robust_{i}"]).astype(bool).ravel()
        if flags.size != len(y):
            raise ConfigError(f"{where}: robust_{i} has {flags.size} flags for {len(y)} records")
        robust.append(flags)
    correct = None
    if "pred_clean" in arrays:
        pred = np.asarray(arrays["pred_clean"]).ravel()
        if pred.size != len(y):
            raise ConfigError(f"{where}: pred_clean has {pred.size} predictions for {len(y)} records")
        correct = pred == np.asarray(y).ravel()
    return PairedRecords(digest.hexdigest(), eps, tuple(robust), correct)


def load_paired_records(path: str | Path) -> PairedRecords:
    """The :class:`PairedRecords` of the ``adversarial.npz`` at ``path`` (read without pickle); ConfigError when
    it is missing or unreadable."""
    where = printable(str(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ("x", "y", "eps", "pred_clean") or k.startswith("robust_")}
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file (the per-record robust flags a baseline rule needs)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where} is not a readable adversarial.npz ({printable(e)})") from None
    return paired_records(arrays, where)


@dataclass(frozen=True)
class Baseline:
    """The run a policy's baseline rules compare with: its result, its per-record flags, and how it was given."""

    result: AuditResult
    records: PairedRecords
    source: str


def find_run(spec: str | Path, store: RunStore | None, where: str) -> tuple[AuditResult, Path | None]:
    """The finished audit ``spec`` names and its ``adversarial.npz`` (``None`` when it records none): a
    ``result.json`` or the folder holding one, or a run id (or a unique prefix) in ``store``. ConfigError, prefixed
    with ``where``, when it cannot be found or is not a finished audit."""
    text = str(spec)
    path = Path(spec)
    if path.is_dir() and (path / "result.json").is_file():  # the run's output folder
        path = path / "result.json"
    if text.endswith(".json") or path.is_file():
        try:
            result = AuditResult.load(path)
        except ModelsecError as e:
            raise ConfigError(f"{where}: {e}") from None
        if result.robustness is not None and result.robustness.adversarial_file:
            return result, path.parent / result.robustness.adversarial_file
        return result, None
    if store is None:
        raise ConfigError(f"{where}: not a result.json, and there is no run store to look a run id up in")
    try:
        run = store.get(text)
    except ModelsecError as e:
        raise ConfigError(f"{where}: {e}") from None
    if run.result is None:
        raise ConfigError(f"{where}: run {run.summary.id} is not a finished audit ({run.summary.kind})")
    return run.result, next((Path(a.path) for a in run.artifacts if a.name == "adversarial"), None)


def load_baseline(spec: str | Path, store: RunStore | None = None) -> Baseline:
    """The baseline ``spec`` names: a ``result.json`` (its ``adversarial.npz`` beside it, as the result names it)
    or the folder holding one, or a run id (or a unique prefix) in ``store`` (the run's recorded ``adversarial``
    artifact). ConfigError when the run cannot be found or has no robustness part or no ``adversarial.npz``."""
    text = str(spec)
    where = f"--baseline {printable(text)}"
    result, npz = find_run(spec, store, where)
    if result.robustness is None:
        raise ConfigError(f"{where}: the baseline audit has no robustness part")
    if npz is None:
        raise ConfigError(f"{where}: the baseline has no adversarial.npz (the per-record robust flags)")
    if not npz.is_file():
        raise ConfigError(f"{where}: the baseline's adversarial.npz is missing ({printable(str(npz))})")
    return Baseline(result, load_paired_records(npz), text)


def _check_paired(records: PairedRecords, baseline: Baseline) -> None:
    if records.records != baseline.records.records:
        raise ConfigError(
            f"--baseline {printable(baseline.source)}: the baseline attacked other records than this audit (their "
            "inputs or labels differ): audit the same data with the same --samples, --seed and split"
        )


# -- parsing ------------------------------------------------------------------------------------------------------


def load_gate(path: str | Path) -> Gate:
    """The gate of the policy file at ``path`` (:func:`parse_gate`); ConfigError when it cannot be read."""
    where = printable(str(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--policy {where}: cannot read the file ({printable(e.strerror or e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--policy {where}: not a UTF-8 text file") from None
    return parse_gate(text, source=str(path))


def parse_gate(text: str, *, source: str | None = None) -> Gate:
    """The gate a policy file's TOML ``text`` describes, checked completely: an unknown section or key, a value
    of the wrong type or out of range, or a file without rules is a ConfigError naming the key."""
    where = f"policy file {printable(source)}" if source else "policy"
    toml = _toml()
    try:
        doc = toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML ({printable(e)})") from None
    rules: list[Rule] = []
    for section, body in doc.items():
        parsers = _SECTIONS.get(section)
        if parsers is None:
            raise ConfigError(f"{where}: unknown section [{printable(section, 40)}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {section} must be a table ([{section}]), got {_type(body)}")
        for key, value in body.items():
            parse = parsers.get(key)
            if parse is None:
                raise ConfigError(
                    f"{where}: unknown key {section}.{printable(key, 40)} (known in [{section}]: {', '.join(parsers)})"
                )
            rules.extend(parse(value, f"{where}: {section}.{key}"))
    if not rules:
        raise ConfigError(f"{where} has no rules (sections: {', '.join(_SECTIONS)})")
    return Gate(tuple(rules), source)


def _toml() -> Any:
    """The TOML reader: the standard library's ``tomllib`` (Python 3.11+), else the ``tomli`` package it came
    from; ConfigError saying so when neither is there (Python 3.10 without tomli)."""
    try:
        import tomllib

        return tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli  # type: ignore[import-not-found, unused-ignore]

            return tomli
        except ImportError:
            raise ConfigError(
                "reading a policy file needs Python 3.11+ or the tomli package (pip install tomli)"
            ) from None


def _tables(value: Any, where: str) -> list[tuple[dict[str, Any], str]]:
    """A rule's table, or each table of a list of them, with its name for messages."""
    if isinstance(value, dict):
        return [(value, where)]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where} must be a table such as {{ value = 0.5 }} or a list of tables, got {_type(value)}")


def _fields(table: dict[str, Any], where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    unknown = [k for k in table if k not in required + optional]
    if unknown:
        raise ConfigError(f"{where}: unknown key {printable(unknown[0], 40)} (known: {', '.join(required + optional)})")
    missing = [k for k in required if k not in table]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]}")


def _number(table: dict[str, Any], key: str, where: str, low: float, high: float, *, open_low: bool = False) -> float:
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where}.{key} must be a number, got {_type(v)}")
    if not (low < v if open_low else low <= v) or not v <= high:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ConfigError(f"{where}.{key} must be in {interval}, got {v!r}")
    return float(v)


def _bound(table: dict[str, Any], where: str, allowed: tuple[str, ...]) -> str:
    v = table.get("bound", POINT)
    if v not in allowed:
        raise ConfigError(f"{where}.bound must be {' or '.join(repr(a) for a in allowed)}, got {printable(repr(v))}")
    return str(v)


def _max_robust_accuracy_drop(value: Any, where: str) -> list[Rule]:
    rules: list[Rule] = []
    for t, w in _tables(value, where):
        _fields(t, w, ("eps",), ("significance", "max_value"))
        eps = _number(t, "eps", w, 0.0, math.inf, open_low=True)
        significance = _number(t, "significance", w, 0.0, 1.0, open_low=True) if "significance" in t else 0.05
        max_value = _number(t, "max_value", w, 0.0, 1.0) if "max_value" in t else 0.0
        rules.append(MaxRobustAccuracyDrop(eps, significance, max_value))
    return rules


def _max_clean_accuracy_drop(value: Any, where: str) -> list[Rule]:
    t, w = _single_table(value, where)
    _fields(t, w, (), ("significance", "max_value"))
    significance = _number(t, "significance", w, 0.0, 1.0, open_low=True) if "significance" in t else 0.05
    max_value = _number(t, "max_value", w, 0.0, 1.0) if "max_value" in t else 0.0
    return [MaxCleanAccuracyDrop(significance, max_value)]


def _min_robust_accuracy(value: Any, where: str) -> list[Rule]:
    rules: list[Rule] = []
    for t, w in _tables(value, where):
        _fields(t, w, ("eps", "value"), ("bound",))
        eps = _number(t, "eps", w, 0.0, math.inf, open_low=True)
        rules.append(MinRobustAccuracy(eps, _number(t, "value", w, 0.0, 1.0), _bound(t, w, (POINT, LOWER))))
    return rules


def _require_resolved_checks(value: Any, where: str) -> list[Rule]:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {_type(value)}")
    return [RequireResolvedChecks()] if value else []


def _max_tpr_at_fpr(value: Any, where: str) -> list[Rule]:
    rules: list[Rule] = []
    for t, w in _tables(value, where):
        _fields(t, w, ("fpr", "value"), ("bound",))
        fpr = _number(t, "fpr", w, 0.0, 1.0, open_low=True)
        rules.append(MaxTprAtFpr(fpr, _number(t, "value", w, 0.0, 1.0), _bound(t, w, (POINT, UPPER))))
    return rules


def _max_auc(value: Any, where: str) -> list[Rule]:
    t, w = _single_table(value, where)
    _fields(t, w, ("value",), ("bound",))
    return [MaxAuc(_number(t, "value", w, 0.0, 1.0), _bound(t, w, (POINT, UPPER)))]


def _max_epsilon_lower_bound(value: Any, where: str) -> list[Rule]:
    t, w = _single_table(value, where)
    _fields(t, w, ("value",), ())
    return [MaxEpsilonLowerBound(_number(t, "value", w, 0.0, math.inf))]


def _max_claimed_epsilon(value: Any, where: str) -> list[Rule]:
    t, w = _single_table(value, where)
    _fields(t, w, ("value",), ())
    return [MaxClaimedEpsilon(_number(t, "value", w, 0.0, math.inf))]


def _single_table(value: Any, where: str) -> tuple[dict[str, Any], str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table such as {{ value = 0.5 }}, got {_type(value)}")
    return value, where


_SECTIONS: dict[str, dict[str, Callable[[Any, str], list[Rule]]]] = {
    "robustness": {
        "min_robust_accuracy": _min_robust_accuracy,
        "require_resolved_checks": _require_resolved_checks,
        "max_robust_accuracy_drop": _max_robust_accuracy_drop,
        "max_clean_accuracy_drop": _max_clean_accuracy_drop,
    },
    "privacy": {
        "max_tpr_at_fpr": _max_tpr_at_fpr,
        "max_auc": _max_auc,
        "max_epsilon_lower_bound": _max_epsilon_lower_bound,
    },
    "dp": {
        "max_claimed_epsilon": _max_claimed_epsilon,
    },
}


def _type(v: Any) -> str:
    """A TOML value's kind, for messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}  # fmt: skip
    kind = names.get(type(v), type(v).__name__)
    return f"{kind} {printable(repr(v), 40)}" if isinstance(v, str | int | float) else kind


# -- evaluation -----------------------------------------------------------------------------------------------------


def check_gate_config(
    gate: Gate, eps: Iterable[float], *, baseline: Baseline | None = None, in_comparison: bool = False
) -> None:
    """Before the audit: ConfigError when a robustness rule names an eps the audit will not run (``eps``: its
    budgets), or a rule needs a baseline and none is given, or the baseline did not attack at the rule's eps.
    ``in_comparison``: the gate checks every model of ``modelsec compare``, whose baseline rules compare each
    hardened model with the comparison's baseline model (same records, same eps), so they need no ``--baseline``."""
    eps = list(eps)
    ran = {eps_key(e) for e in eps}
    if in_comparison and baseline is not None:
        raise ConfigError("compare's baseline rules compare with its first model (BASELINE): --baseline is not used")
    for rule in gate.rules:
        if _is_baseline_rule(rule) and baseline is None and not in_comparison:
            raise ConfigError(
                f"policy rule {rule.name} compares with a baseline run: give --baseline RUN_ID|result.json"
            )
        if isinstance(rule, MaxRobustAccuracyDrop) and baseline is not None:
            baseline.records.robust_at(rule.eps, f"policy rule {rule.name}: the baseline {baseline.source}")
        if isinstance(rule, MaxCleanAccuracyDrop) and baseline is not None:
            baseline.records.correct_flags(f"policy rule {rule.name}: the baseline {baseline.source}")
        if isinstance(rule, MinRobustAccuracy | MaxRobustAccuracyDrop) and eps_key(rule.eps) not in ran:
            raise ConfigError(
                f"policy rule {rule.name}: the audit does not run eps={rule.eps:g} "
                f"(--eps {','.join(f'{e:g}' for e in eps)}); add it to --eps or change the rule"
            )


def check_dp_audit_gate(gate: Gate) -> None:
    """Before ``audit-dp``: ConfigError naming the first rule it cannot answer (it measures the canaries' epsilon
    lower bound and knows the training's claim, nothing else)."""
    for rule in gate.rules:
        if not isinstance(rule, DP_AUDIT_RULES):
            raise ConfigError(
                f"policy rule {rule.name}: audit-dp does not measure it (its rules: {_dp_audit_rules()}); use a "
                "policy file of those rules"
            )


def evaluate_gate(
    gate: Gate, result: GatedResult, *, records: PairedRecords | None = None, baseline: Baseline | None = None
) -> GateOutcome:
    """Every rule of ``gate`` evaluated on ``result``, in order; a baseline rule compares the audit's per-record
    flags ``records`` with ``baseline``'s. ConfigError when a rule asks for a number the result does not hold (an
    eps the audit did not run, a privacy rule on an audit without a privacy part, a baseline rule without a
    baseline or on other records)."""
    outcomes = []
    for rule in gate.rules:
        if isinstance(rule, MaxRobustAccuracyDrop | MaxCleanAccuracyDrop) and baseline is not None:
            outcomes.append(rule.compare(records, baseline))
        else:
            outcomes.append(rule.evaluate(result))
    return GateOutcome(policy=gate.source, passed=all(o.passed for o in outcomes), rules=outcomes)


def _robustness(result: GatedResult, rule: str) -> RobustnessResult:
    if isinstance(result, DPAuditResult):
        raise ConfigError(f"policy rule {rule}: audit-dp measures no robustness (its rules: {_dp_audit_rules()})")
    if result.robustness is None:
        raise ConfigError(f"policy rule {rule}: the audit has no robustness part")
    return result.robustness


def _privacy(result: GatedResult, rule: str) -> PrivacyResult:
    if isinstance(result, DPAuditResult):
        raise ConfigError(f"policy rule {rule}: audit-dp runs no membership attack (its rules: {_dp_audit_rules()})")
    if result.privacy is None or not result.privacy.attacks:
        raise ConfigError(f"policy rule {rule}: the audit has no privacy (membership inference) part")
    return result.privacy


def _compared(measured: float, interval: Interval | None, bound: str) -> float:
    if bound == LOWER and interval is not None:
        return interval.low
    if bound == UPPER and interval is not None:
        return interval.high
    return measured


def _strongest(
    rule: str,
    attacks: list[MembershipAttackResult],
    number: Callable[[MembershipAttackResult], tuple[float, Interval | None]],
    bound: str,
    threshold: float,
    what: str,
    fmt: Callable[[float], str],
) -> RuleOutcome:
    """The outcome of a maximum rule on the attack whose compared value is the largest (NaN counts as the
    largest: a number that cannot be checked fails); a tie goes to the higher AUC, as in the report's strongest
    attack (:func:`modelsec.audits.membership.strongest`)."""

    def key(a: MembershipAttackResult) -> tuple[float, float]:
        value = _compared(*number(a), bound)
        return (math.inf if math.isnan(value) else value, a.auc if math.isfinite(a.auc) else -1.0)

    attack = max(attacks, key=key)
    measured, interval = number(attack)
    outcome = _outcome(rule, measured, interval, bound, AT_MOST, threshold, f"{what} of {attack.attack}", fmt)
    return replace(outcome, attack=attack.attack)


def _outcome(
    rule: str,
    measured: float,
    interval: Interval | None,
    bound: str,
    comparison: str,
    threshold: float,
    what: str,
    fmt: Callable[[float], str],
) -> RuleOutcome:
    compared = _compared(measured, interval, bound)
    passed = compared >= threshold if comparison == AT_LEAST else compared <= threshold  # NaN: False
    ci = "" if interval is None else f" [{fmt(interval.low)}, {fmt(interval.high)}]"
    by = "" if bound == POINT else f" ({'lower' if bound == LOWER else 'upper'} bound {fmt(compared)})"
    message = f"{what}: {fmt(measured)}{ci}{by}, required {comparison} {fmt(threshold)}"
    value = None if math.isnan(measured) else float(measured)  # JSON has no NaN: not measured
    return RuleOutcome(rule, value, interval, bound, comparison, threshold, bool(passed), message)


def _percent(v: float) -> str:
    return f"{v:.1%}" if math.isfinite(v) else str(v)


def _plain(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else str(v)
