"""Audits: robustness, privacy, sanity checks, and the end-to-end runner."""

from modelsec.audits.runner import AuditConfig, AuditOutcome, run_audit

__all__ = ["AuditConfig", "AuditOutcome", "run_audit"]
