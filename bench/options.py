"""How to run: the choices of device, precision and CUDA graphs, and how ``auto`` resolves.

Light on purpose (torch is imported only to look for CUDA): the CLI builds its parser from it.
A :class:`bench.spec.Recipe` holds the choices; its specs hold them resolved.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
GRAPHS = ("auto", "on", "off")
_said: set[str] = set()  # reasons for training eagerly already printed


# what a recipe holds besides hyperparameters: how to run (``ablate --vary`` can vary them too)
HOW_KEYS = ("device", "precision", "compile", "graphs")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise ValueError(f"device={device!r}: use {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 autocast on CUDA, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def graph_blocker(hparams: Mapping[str, Any], compile: bool) -> str | None:
    """Why a run's step cannot be captured, or None."""
    if hparams.get("carry_state"):
        return "carry_state keeps the recurrent state in Python between batches"
    if compile:
        return "torch.compile manages its own graphs"
    if hparams.get("optimizer") == "sgd":
        return "torch's SGD reads a tensor learning rate on the host (an item() call)"
    return None


def resolve_graphs(graphs: str, device: str, hparams: Mapping[str, Any], compile: bool) -> bool:
    """``auto``: on for CUDA where the run can be captured; ``on`` without CUDA is an error; a run
    that cannot be captured trains eagerly and says why, once."""
    if graphs not in GRAPHS:
        raise ValueError(f"graphs={graphs!r}: use {', '.join(GRAPHS)}")
    if graphs == "on" and device != "cuda":
        raise ValueError("graphs=on needs CUDA (the CPU path does not capture)")
    if graphs == "off" or device != "cuda":
        return False
    blocker = graph_blocker(hparams, compile)
    if blocker is not None:
        if blocker not in _said:
            _said.add(blocker)
            print(f"graphs: training eagerly: {blocker}", file=sys.stderr, flush=True)
        return False
    return True
