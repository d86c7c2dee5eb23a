"""Render an :class:`~modelsec.results.AuditResult` for people: self-contained HTML or Markdown.

The JSON form is :meth:`modelsec.results.AuditResult.save`; this package never runs a model.
"""

from __future__ import annotations

from modelsec.report.html import render_html, write_html
from modelsec.report.markdown import render_markdown

__all__ = ["render_html", "render_markdown", "write_html"]
