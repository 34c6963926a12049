"""DPIA evidence reports: a model built by SQL over the evidence database, and its renderers.

``build_report`` queries (one statement per table, kept with the table); ``render`` turns the model into
HTML, Markdown, PDF, JSON or a CNIL PIA file. ``teletap report`` (``teletap.cli_report``) wires them up.
"""

from .build import ReportOptions, build_report, table_count
from .model import Report, Section, Table
from .render import EXTENSIONS, FORMATS, PdfUnavailable, render
from .scope import ReportError, Scope, parse_level, parse_time, resolve_sessions

__all__ = ["EXTENSIONS", "FORMATS", "PdfUnavailable", "Report", "ReportError", "ReportOptions", "Scope", "Section",
           "Table", "build_report", "parse_level", "parse_time", "render", "resolve_sessions", "table_count"]
