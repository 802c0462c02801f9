"""The entry point: parse the command line, set up signals and logging, run the command; the
errors a user causes as one ``error:`` line (exit 2)."""

from __future__ import annotations

import logging
import os
import sys

from bench import interrupts
from bench.allocator import keep_freed_memory
from bench.cli.options import check_approach_names
from bench.cli.parser import build_parser
from bench.errors import DataError, LabelError, NonFiniteLossError, ReportError, first_line

# errors caused by what the user asked for: printed as one line, not a traceback
USER_ERRORS = (DataError, LabelError, KeyError, ValueError, NonFiniteLossError, ReportError)


def joined_negative_values(argv: list[str]) -> list[str]:
    """``--budget -5m`` as ``--budget=-5m``: argparse takes a value starting with '-' for an
    option, so the check of the value (not "expected one argument") says what is wrong."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--budget" and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"--budget={arg}"
        else:
            out.append(arg)
    return out


def set_log_levels(verbose: bool) -> None:
    """The console holds the project's own lines: MLflow's loggers (configured from
    MLFLOW_LOGGING_LEVEL when MLflow is imported, also in worker processes), alembic's and
    Optuna's at WARNING unless ``--verbose``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our bars suffice
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run
    level = "INFO" if verbose else "WARNING"
    if verbose:
        os.environ["MLFLOW_LOGGING_LEVEL"] = level
    else:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)
    os.environ["BENCH_LOG_LEVEL"] = level
    logging.getLogger("alembic").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(joined_negative_values(sys.argv[1:] if argv is None else argv))
    if names := getattr(args, "approach", None):
        try:
            check_approach_names([names] if isinstance(names, str) else names)
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
    interrupts.catch()  # a kill ends runs as KILLED and saves what is done, like Ctrl-C
    keep_freed_memory()  # CPU steps stop page-faulting their activations in anew (bench.allocator)
    set_log_levels(args.verbose)
    try:
        code = args.func(args)
        interrupts.check()  # a stop lost on the way still ends as interrupted
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # MLflow refusing a setting (a store, an experiment id): one line
        if not type(err).__module__.startswith("mlflow."):
            raise
        print(f"error: MLflow: {first_line(err)}", file=sys.stderr)
        return 2
    return code or 0
