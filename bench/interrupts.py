"""Stopping on Ctrl-C or a kill: both raise ``KeyboardInterrupt``, so runs end KILLED, what is
done is saved and a re-run resumes. Python raises it wherever the main thread is, and it can be
lost there (printed as "Exception ignored" when it lands in a finalizer, or turned into another
error inside a library): it is remembered and raised again at the next :func:`check`, which the
training loop and the work queues call."""

from __future__ import annotations

import signal

_received = False


def catch() -> None:
    """Handle SIGINT and SIGTERM in this process (the main thread's)."""
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def received() -> bool:
    """Whether this process was told to stop (an error now is most likely its consequence)."""
    return _received


def check() -> None:
    """Raise ``KeyboardInterrupt`` if this process was told to stop."""
    if _received:
        raise KeyboardInterrupt


def _stop(signum: int, frame: object) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt
