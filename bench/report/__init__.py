"""Comparison reports: one self-contained HTML page built from MLflow with pandas and seaborn."""

from bench.report.build import build_report
from bench.report.data import ReportError, load_comparison

__all__ = ["ReportError", "build_report", "load_comparison"]
