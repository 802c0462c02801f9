"""captcha-bench: text-recognition architectures compared on captcha images.

The public API, for scripts (``experiments/``) and notebooks, is the names below; each is loaded
on first use, so ``python -m bench --help`` imports none of torch, MLflow or Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "ablation_table": "bench.ablate",
    "markdown": "bench.ablate",
    "get_approach": "bench.approaches",
    "list_approaches": "bench.approaches",
    "load_dataset": "bench.data",
    "make_holdout_split": "bench.data.store",
    "Recipe": "bench.spec",
    "RunSpec": "bench.spec",
    "create_model": "bench.spec",
    "make_spec": "bench.spec",
    "Trainer": "bench.training",
    "TrainResult": "bench.training",
    "build_trainer": "bench.training",
    "seed_everything": "bench.training",
    "train": "bench.training",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return __all__
