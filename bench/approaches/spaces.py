"""Search-space blocks the approaches share (approaches import this).

An approach's search space is ``space(name=range, ...)``: the hyperparameters it tunes, in the order
they are suggested, each with a ``(low, high)`` float range or a list of choices. How a range is
searched follows from the name: :data:`LOG_SCALE` names log-uniformly, other ranges uniformly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SearchSpace = Callable[[Any], dict[str, Any]]  # optuna.Trial -> hyperparameters
Range = tuple[float, float] | list[Any]

LOG_SCALE = frozenset({"lr", "weight_decay"})  # rates searched over orders of magnitude

# ranges several approaches search alike
WEIGHT_DECAY = (1e-4, 0.1)
GRAD_CLIP = [1.0, 3.0, 10.0]


def suggest(trial: Any, name: str, values: Range) -> Any:
    """One suggestion: a choice from a list, else a float in ``(low, high)``."""
    if isinstance(values, list):
        return trial.suggest_categorical(name, values)
    low, high = values
    return trial.suggest_float(name, low, high, log=name in LOG_SCALE)


def space(**ranges: Range) -> SearchSpace:
    """The search space that suggests each of ``ranges`` in the order given (the order a
    sampler draws them in) and returns them as a dict."""

    def search_space(trial: Any) -> dict[str, Any]:
        return {name: suggest(trial, name, values) for name, values in ranges.items()}

    return search_space
