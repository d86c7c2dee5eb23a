"""Typed, JSON-serialisable results of a policy audit (``result.json`` of ``modelsec audit-policy``) and of a
comparison of policies (``comparison.json`` of ``modelsec compare-policies``); no pickle, no policy.

A policy audit runs a trained policy for ``episodes`` seeded episodes in a Gymnasium environment, clean and under
each attack on its observations at each ``eps`` (the state-adversarial MDP of Zhang et al. 2020: the attacker
changes what the policy sees, never the environment's state), with the SAME episode seeds for every attack, so that
the worst case over attacks is taken per episode. Returns are the sum of the environment's rewards in an episode;
every mean carries a bootstrap confidence interval. ``eps`` is in units of each observation dimension's standard
deviation, estimated from separate seeded clean rollouts and recorded (:class:`ScaleEstimate`).

Written by :mod:`modelsec.audits.policy_audit` (and :mod:`modelsec.audits.policy_compare`), rendered by
:mod:`modelsec.report.policy_audit`. ``policy_audit.schema.json`` (:func:`load_policy_audit_schema`) is the JSON
Schema of :data:`POLICY_AUDIT_SCHEMA`; :func:`validate_policy_audit_dict` checks a parsed file against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from modelsec.core.errors import DataError, printable
from modelsec.core.records import from_dict
from modelsec.results.audit import Verdict, eps_key
from modelsec.stats.intervals import Interval

POLICY_AUDIT_SCHEMA = "modelsec.policy-audit/1"
POLICY_COMPARISON_SCHEMA = "modelsec.policy-comparison/1"
RANDOM_ATTACK = "random"
"""The baseline every report shows beside the attacks: uniform random noise of the same eps."""


def load_policy_audit_schema() -> dict[str, Any]:
    """The JSON Schema of a policy audit's ``result.json`` (a fresh copy on every call)."""
    text = resources.files("modelsec.results.schema").joinpath("policy_audit.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_policy_audit_dict(d: Any) -> None:
    """Raise ``ValueError`` naming up to five violations (JSON path and reason) when ``d`` (a parsed
    ``result.json``) is not a :data:`POLICY_AUDIT_SCHEMA` result. Uses ``jsonschema`` when installed; without it only
    the schema name and the required top-level fields are checked."""
    if not isinstance(d, dict):
        raise ValueError(f"a policy audit result is a JSON object, got {type(d).__name__}")
    if d.get("schema") != POLICY_AUDIT_SCHEMA:
        raise ValueError(f"not a {POLICY_AUDIT_SCHEMA} result: schema {d.get('schema')!r}")
    schema = load_policy_audit_schema()
    missing = [key for key in schema["required"] if key not in d]
    if missing:
        raise ValueError("policy audit result lacks required field(s) " + ", ".join(missing))
    try:
        import jsonschema
    except ImportError:
        return
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(d), key=lambda e: (e.json_path, e.message))
    if errors:
        lines = [f"{e.json_path}: {e.message}" for e in errors[:5]]
        raise ValueError("policy audit result does not match its schema: " + "; ".join(lines))


def relative_drop(clean: float, attacked: float) -> float | None:
    """The return lost under attack as a fraction of the clean return's magnitude, ``(clean - attacked) / |clean|``
    (0.9: 90% of it lost; negative: the attack helped); ``None`` for a clean return of 0.

    >>> relative_drop(500.0, 50.0), relative_drop(-150.0, -300.0), relative_drop(0.0, -1.0)
    (0.9, 1.0, None)
    """
    if clean == 0 or not math.isfinite(clean) or not math.isfinite(attacked):
        return None
    return (clean - attacked) / abs(clean)


@dataclass(frozen=True)
class PolicyInfo:
    """The audited policy: its file (``path``, ``sha256``; None for a policy given as an object), the format it was
    read from (``safetensors``, ``pt2``, ``sb3-zip``, ``module``), its observation shape and action space
    (:meth:`~modelsec.rl.policy.ActionSpec.to_dict`), whether it has a critic, its parameter count, and its card
    (where it came from and how it was trained, as the file says)."""

    path: str | None
    sha256: str | None
    format: str
    observation_shape: list[int]
    action: dict[str, Any]
    has_critic: bool
    parameters: int | None = None
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def action_kind(self) -> str:
        return str(self.action.get("kind", ""))


@dataclass(frozen=True)
class ScaleEstimate:
    """The unit of ``eps``: each flattened observation dimension's standard deviation ``std`` over ``steps``
    observations of ``episodes`` clean episodes of the policy (seeds ``seeds``, separate from the audit's), and the
    observation space's bounds (``None`` where unbounded)."""

    std: list[float]
    seeds: list[int]
    episodes: int
    steps: int
    low: list[float | None]
    high: list[float | None]
    source: str = "clean rollouts of the audited policy"


@dataclass(frozen=True)
class PolicyAttackSetting:
    """An attack as it was run: its registry ``name``, what it ``needs`` (none, gradients, critic) and its
    settings (``params``: steps, step size, budget...)."""

    name: str
    needs: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SkippedPolicyAttack:
    """An attack that was not run, and why (it needs a critic the policy lacks, or another action kind)."""

    attack: str
    reason: str


@dataclass(frozen=True)
class EpisodeReturns:
    """Clean episodes: each episode's return (``returns``, in seed order) and length (``steps``), their mean and its
    bootstrap confidence interval, and the policy's queries per episode."""

    returns: list[float]
    steps: list[int]
    mean_return: float
    ci: Interval
    queries: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PolicyAttackResult:
    """One attack at one eps, over the audit's episodes (seed order): each episode's return, length, steps attacked
    and policy queries; the mean return with its bootstrap CI; ``attacked_fraction`` (attacked steps over all steps)
    and ``mean_queries`` (per episode); ``seconds`` the wall time of its episodes. ``changed_actions`` (discrete
    policies; ``None`` otherwise): per episode the steps whose action the attack changed, and ``changed_fraction``
    those steps over all steps."""

    attack: str
    eps: float
    returns: list[float]
    steps: list[int]
    attacked_steps: list[int]
    queries: list[int]
    mean_return: float
    ci: Interval
    attacked_fraction: float
    mean_queries: float
    seconds: float
    changed_actions: list[int] | None = None
    changed_fraction: float | None = None


@dataclass(frozen=True)
class PolicyWorstCase:
    """The worst case at one eps: per episode the lowest return over every attack run (``returns``) and the
    attack that gave it (``attacks``); their mean, its bootstrap CI, and ``relative_drop`` against the clean mean
    (:func:`relative_drop`)."""

    eps: float
    returns: list[float]
    attacks: list[str]
    mean_return: float
    ci: Interval
    relative_drop: float | None


@dataclass(frozen=True)
class EpisodeAnimation:
    """The animated image of one attacked episode beside the clean one (same seed): its ``file`` (relative to
    ``result.json``; None when no frames were rendered), the seed, the attack and eps, both returns, and the
    frames shown (every ``stride``-th step)."""

    file: str | None
    seed: int
    attack: str
    eps: float
    clean_return: float
    attacked_return: float
    frames: int
    stride: int


@dataclass(frozen=True)
class PolicyAuditResult:
    """A policy audit (see the module's docstring). ``results`` holds one entry per (eps, attack), ``worst_case``
    one per eps; ``seeds`` are the episodes' seeds (the same for the clean run and every attack), ``seed`` the
    audit's. ``timings`` in seconds (``scale``, ``clean``, ``attacks``, ``total``), ``versions`` the libraries'.
    ``notes``: what the audit did or noticed (an attack weaker than random noise, a skipped attack)."""

    run_id: str
    created_at: str
    policy: PolicyInfo
    env_id: str
    episodes: int
    seeds: list[int]
    max_steps: int | None
    norm: str
    eps: list[float]
    scale: ScaleEstimate
    attacks: list[PolicyAttackSetting]
    clean: EpisodeReturns
    results: list[PolicyAttackResult]
    worst_case: list[PolicyWorstCase]
    verdict: Verdict
    seed: int
    settings: dict[str, Any]
    versions: dict[str, str]
    timings: dict[str, float]
    preset: str | None = None
    skipped: list[SkippedPolicyAttack] = field(default_factory=list)
    animation: EpisodeAnimation | None = None
    notes: list[str] = field(default_factory=list)
    schema: str = POLICY_AUDIT_SCHEMA

    @property
    def attack_names(self) -> list[str]:
        """The attacks run, in the order run (the random baseline first when it was run)."""
        names: list[str] = []
        for r in self.results:
            if r.attack not in names:
                names.append(r.attack)
        return names

    def result_for(self, eps: float, attack: str) -> PolicyAttackResult | None:
        return next((r for r in self.results if r.attack == attack and eps_key(r.eps) == eps_key(eps)), None)

    def worst_at(self, eps: float) -> PolicyWorstCase | None:
        return next((w for w in self.worst_case if eps_key(w.eps) == eps_key(eps)), None)

    def strongest_attack(self, eps: float) -> PolicyAttackResult | None:
        """The single attack with the lowest mean return at ``eps`` (ties: an attack before the random baseline,
        then the first run)."""
        at = [r for r in self.results if eps_key(r.eps) == eps_key(eps)]
        return min(at, key=lambda r: (r.mean_return, r.attack == RANDOM_ATTACK)) if at else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyAuditResult:
        """The result a parsed ``result.json`` holds, checked against the schema first
        (:func:`validate_policy_audit_dict`): a :class:`~modelsec.core.errors.DataError` naming the problem
        otherwise."""
        try:
            validate_policy_audit_dict(d)
        except ValueError as e:
            raise DataError(printable(e, max_chars=1000)) from None
        return from_dict(cls, d)

    @classmethod
    def load(cls, path: str | Path) -> PolicyAuditResult:
        where = printable(str(path))
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise DataError(f"{where}: cannot read the file ({printable(e.strerror or e)})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{where} is not a policy audit result: not JSON ({printable(e)})") from None
        try:
            return cls.from_dict(d)
        except DataError as e:
            raise DataError(f"{where} is not a policy audit result this version reads: {e}") from None


# -- comparison of policies ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySummary:
    """One policy of a comparison: its clean mean return and CI, and per eps (``eps_key``) the worst-case mean
    return over every attack (per episode) with its CI and the single strongest attack; its training time and
    defense from its card (None where the card does not say); ``out_dir``: its audit's folder, relative to
    ``comparison.json``."""

    name: str
    path: str | None
    sha256: str | None
    clean_return: float
    clean_ci: Interval
    worst_return: dict[str, float]
    worst_ci: dict[str, Interval]
    strongest_attack: dict[str, str]
    training_seconds: float | None = None
    defense: str | None = None
    verdict_level: str = "ok"
    out_dir: str | None = None

    def worst_at(self, key: str | None) -> float | None:
        return None if key is None else self.worst_return.get(key)


@dataclass(frozen=True)
class PolicyRecommendation:
    """The outcome of :func:`modelsec.audits.policy_compare.recommend_policy`: ``eligible`` policies (clean return at
    most ``max_return_drop`` percent of the baseline's magnitude below it), ``excluded`` with the reason, and the
    ``most_robust`` (highest worst-case return at the largest ``eps`` audited); ``rule`` states the rule."""

    max_return_drop: float
    baseline: str
    eps: str | None
    eligible: list[str]
    excluded: dict[str, str]
    most_robust: str | None
    notes: list[str]
    rule: str

    def outcome(self) -> list[str]:
        """The recommendation in a few lines."""
        lines = []
        if self.most_robust is not None:
            lines.append(f"most robust at eps={self.eps}: {self.most_robust}")
        lines.extend(self.notes)
        lines.extend(f"not eligible: {name}: {why}" for name, why in self.excluded.items())
        return lines


@dataclass(frozen=True)
class PolicyComparison:
    """Several policies audited the same way (same environment, episode seeds, attacks, eps and one observation
    scale, the baseline's) and the recommendation."""

    created_at: str
    env_id: str
    episodes: int
    seeds: list[int]
    norm: str
    eps: list[float]
    scale: list[float]
    baseline: str
    policies: list[PolicySummary]
    recommendation: PolicyRecommendation
    settings: dict[str, Any]
    versions: dict[str, str]
    schema: str = POLICY_COMPARISON_SCHEMA

    @property
    def eps_keys(self) -> list[str]:
        return [eps_key(e) for e in self.eps]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyComparison:
        if d.get("schema", POLICY_COMPARISON_SCHEMA) != POLICY_COMPARISON_SCHEMA:
            raise DataError(f"not a {POLICY_COMPARISON_SCHEMA} result: schema {d.get('schema')!r}")
        return from_dict(cls, d)
