"""Typed, versioned, JSON-serialisable results (no pickle): an audit's (:mod:`.audit`), a comparison's
(:mod:`.comparison`) and a one-run DP audit's (:mod:`.dp_audit`), with the JSON schema of ``result.json``
(:mod:`.schema`). The audit result's types are re-exported here: ``from modelsec.results import AuditResult``."""

from modelsec.results.audit import (
    OVERESTIMATED,
    SCHEMA_VERSION,
    UNTRUSTWORTHY,
    AttackRobustness,
    AuditResult,
    DataInfo,
    ExposedRecord,
    MembershipAttackResult,
    MinNormStats,
    ModelInfo,
    PrivacyResult,
    RobustnessResult,
    SanityFlag,
    SkippedAttack,
    Verdict,
    eps_key,
)
from modelsec.stats.intervals import EpsilonEvidence, Interval

__all__ = [
    "OVERESTIMATED",
    "SCHEMA_VERSION",
    "UNTRUSTWORTHY",
    "AttackRobustness",
    "AuditResult",
    "DataInfo",
    "EpsilonEvidence",
    "ExposedRecord",
    "Interval",
    "MembershipAttackResult",
    "MinNormStats",
    "ModelInfo",
    "PrivacyResult",
    "RobustnessResult",
    "SanityFlag",
    "SkippedAttack",
    "Verdict",
    "eps_key",
]
