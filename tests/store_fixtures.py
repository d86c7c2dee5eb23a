"""The store and schema tests use the same realistic result as the report tests."""

from tests.report_fixtures import make_audit_result as make_result

__all__ = ["make_result"]
