"""The parser: the top-level options, then each command's subparser (in the order ``--help``
lists them), whose ``--help`` shows the options' defaults."""

from __future__ import annotations

import argparse
from typing import Any

from bench.cli import models, reports, tools, train, tuning

# each adds one command's subparser, its options and its function (``args.func``)
COMMANDS = (
    tools.add_list,
    train.add_train,
    train.add_compare,
    train.add_curve,
    reports.add_ablate,
    tuning.add_tune,
    tuning.add_run,
    tools.add_perf,
    models.add_predict,
    models.add_export,
    models.add_register,
    models.add_robustness,
    reports.add_report,
    tools.add_ui,
    tools.add_dashboard,
    tools.add_cache,
)


class DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, False, "", [], argparse.SUPPRESS)
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


class CommandParser(argparse.ArgumentParser):
    """A command's parser: its ``--help`` shows the options' defaults."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="captcha-bench: compare text-recognition architectures on captcha images.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show MLflow's and Optuna's own INFO lines (before the command: "
        "python -m bench --verbose run ...)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for add_command in COMMANDS:
        add_command(sub)
    return parser
