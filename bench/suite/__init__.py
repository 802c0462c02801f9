"""Suites: ``experiments/<name>.yaml`` (:mod:`~bench.suite.schema`) and how they run
(:mod:`~bench.suite.runner`)."""

from bench.suite.runner import SuiteOutcome, run_suite
from bench.suite.schema import Suite, SuiteError, default_suites, find_suite, load_suite
from bench.suite.summary import summary_table

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
