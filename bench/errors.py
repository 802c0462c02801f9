"""The errors a user's input causes: the CLI prints each as one ``error:`` line (exit 2). A module
of its own, importing nothing heavy, so the CLI answers ``--help`` without loading torch."""

from __future__ import annotations


class DataError(ValueError):
    """Input data the benchmark cannot use; the message names the file, folder or value."""


class LabelError(ValueError):
    """A label that a codec cannot represent (unknown character, too long)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class ReportError(ValueError):
    """Nothing to report on (unknown or empty experiment)."""


def first_line(err: BaseException) -> str:
    """An error's message cut to its first line (another library's may run to a page), or its
    type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
