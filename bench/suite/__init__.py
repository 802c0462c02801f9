"""Suites: ``experiments/<name>.yaml`` (:mod:`~bench.suite.schema`) and how they run
(:mod:`~bench.suite.runner`)."""

from bench.suite.runner import SuiteOutcome, run_suite, summary_table
from bench.suite.schema import Suite, SuiteError, default_suites, find_suite, load_suite

__all__ = [
    "Suite",
    "SuiteError",
    "SuiteOutcome",
    "default_suites",
    "find_suite",
    "load_suite",
    "run_suite",
    "summary_table",
]
