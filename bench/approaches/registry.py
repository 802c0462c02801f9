"""The approach registry: ``register``, ``get_approach``, ``list_approaches``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from bench.approaches.spaces import SearchSpace
from bench.hparams import PARSERS, TrainConfig, check_model_hparams


@dataclass(frozen=True)
class Approach:
    """One architecture of the benchmark, with its source's defaults and an Optuna search space.

    ``build(num_classes, max_len, channels, height, width, **model_hp)`` returns a module whose
    output is ``(batch, steps, num_classes)`` logits for the ``codec`` (``"ce"`` or ``"ctc"``);
    the approaches write it as ``build(io, **model_hp)`` (:func:`~bench.approaches.layers.builder`).
    ``source`` names the document it comes from (``"000"`` .. ``"003"``); ``train`` overrides
    :class:`~bench.hparams.TrainConfig`'s generic values with the source's; ``model`` holds the
    keyword arguments of ``build``.
    """

    name: str
    source: str
    codec: str
    summary: str
    build: Callable[..., nn.Module]
    train: Mapping[str, Any]
    model: Mapping[str, Any]
    search_space: SearchSpace = field(repr=False)

    @property
    def defaults(self) -> dict[str, Any]:
        """Every hyperparameter of a run with no overrides: the source's reproduction."""
        return {**TrainConfig().to_dict(), **self.train, **self.model}

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``, checked: an unknown key is an error that lists the
        known, a value of the wrong type or out of range one that names it."""
        overrides = dict(overrides or {})
        if unknown := sorted(overrides.keys() - self.defaults.keys()):
            raise KeyError(
                f"{self.name} has no hyperparameter {', '.join(unknown)}; known: "
                f"{', '.join(sorted(self.defaults))}"
            )
        defaults = self.defaults
        hp = {**defaults, **{k: coerce(k, v, defaults[k]) for k, v in overrides.items()}}
        TrainConfig.from_hparams(hp).check()
        check_model_hparams({k: v for k, v in hp.items() if k in self.model})
        return hp

    def build_model(self, num_classes: int, max_len: int, hp: Mapping[str, Any]) -> nn.Module:
        """The model for resolved hyperparameters ``hp`` (the keys ``build`` takes)."""
        model_hp = {k: v for k, v in hp.items() if k not in TrainConfig.field_names()}
        return self.build(
            num_classes, max_len, hp["channels"], hp["height"], hp["width"], **model_hp
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.defaults["channels"], self.defaults["height"], self.defaults["width"]


def coerce(key: str, value: Any, default: Any) -> Any:
    """Give ``value`` the type of ``default`` (``"3e-3"`` -> 0.003, ``budget="8m"`` -> 480.0); a
    mismatch names the key."""
    if key in PARSERS:
        try:
            return PARSERS[key](value)
        except ValueError as err:
            raise ValueError(f"hyperparameter {key}={value!r}: {err}") from None
    if default is None or value is None or isinstance(value, type(default)):
        return value
    try:
        if isinstance(default, bool):
            if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return str(value).lower() in ("true", "1", "yes")
        if isinstance(default, tuple):
            return tuple(value) if isinstance(value, list | tuple) else (type(default[0])(value),)
        if isinstance(default, float) and isinstance(value, int):
            return float(value)
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"hyperparameter {key}={value!r} is not a {type(default).__name__}"
        ) from None


_REGISTRY: dict[str, Approach] = {}


def register(approach: Approach) -> Approach:
    if approach.name in _REGISTRY:
        raise ValueError(f"approach {approach.name!r} is registered twice")
    if bad := (approach.train.keys() - TrainConfig.field_names()) | (
        approach.model.keys() & TrainConfig.field_names()
    ):
        raise ValueError(f"{approach.name}: misplaced hyperparameters {sorted(bad)}")
    if approach.codec not in ("ce", "ctc"):
        raise ValueError(f"{approach.name}: codec must be 'ce' or 'ctc', got {approach.codec!r}")
    _REGISTRY[approach.name] = approach
    return approach


def get_approach(name: str) -> Approach:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown approach {name!r}; known: {', '.join(list_approaches())}"
        ) from None


def list_approaches() -> list[str]:
    """Registered names, by source document, then name."""
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].source, name))
