"""Command line: ``python -m bench list | train | compare | ablate | tune | run | perf | predict |
report | ui | dashboard | cache``.

torch, timm, MLflow and the rest are imported by the commands that use them: ``--help`` and
argument errors answer without them. Modules: :mod:`~bench.cli.entry` (``main``),
:mod:`~bench.cli.parser`, :mod:`~bench.cli.options` (the option groups the commands share),
:mod:`~bench.cli.prepare` (specs, data, preflight checks, workers) and the commands by concern:
:mod:`~bench.cli.train`, :mod:`~bench.cli.reports`, :mod:`~bench.cli.tuning`,
:mod:`~bench.cli.tools`."""

from bench.cli.entry import main
from bench.cli.options import approach_names, parse_assignments
from bench.cli.parser import build_parser
from bench.cli.prepare import workers_from

__all__ = ["approach_names", "build_parser", "main", "parse_assignments", "workers_from"]
