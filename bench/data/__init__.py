"""Datasets: ``captcha-v2``, ``synthetic:SPEC`` and ``folder:PATH``, decoded once and split once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.data.augment import Augment
from bench.data.sources import (
    SYNTHETIC_PRESETS,
    DataError,
    DatasetMismatchWarning,
    Source,
    captcha_v2_source,
    folder_source,
    synthetic_source,
)
from bench.data.store import (
    DECODE_ORDERS,
    Split,
    TensorStore,
    decode_source,
    make_holdout_split,
    make_kfold_split,
    make_split,
    nested_subset,
    split_digest,
)

__all__ = [
    "DECODE_ORDERS",
    "SYNTHETIC_PRESETS",
    "Augment",
    "DataError",
    "Dataset",
    "DatasetMismatchWarning",
    "Source",
    "Split",
    "TensorStore",
    "load_dataset",
]


@dataclass
class Dataset:
    """A source plus its split; :meth:`store` decodes it at an approach's input size."""

    source: Source
    split_seed: int = 0
    skip_bad: bool = False
    _stores: dict[tuple, TensorStore] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.source.name

    def store(
        self, channels: int, height: int, width: int, order: str = "convert-resize"
    ) -> TensorStore:
        """The images decoded at this size (``order``: see :data:`DECODE_ORDERS`), once."""
        key = (channels, height, width, order)
        if key not in self._stores:
            self._stores[key] = decode_source(
                self.source, channels, height, width, self.skip_bad, order
            )
        return self._stores[key]

    def split(
        self,
        store: TensorStore,
        protocol: str = "benchmark",
        holdout: float = 0.2,
        folds: int = 5,
        fold: int = 0,
        train_size: int = 0,
    ) -> Split:
        """The split of a protocol (``split_seed`` shuffles each):

        - ``benchmark``: 70/10/20 train/val/test, one for all;
        - ``source``: a source's own, ``holdout`` of the images held out as the test part, which
          is also what each epoch validates on (as the sources did);
        - ``kfold``: fold ``fold`` of ``folds`` is the test part (every image is tested once
          across the folds); validation is 10% of the images, taken from the other folds.

        With ``train_size``, only that many training images train (:func:`nested_subset`).
        """
        if protocol == "source":
            split = make_holdout_split(store.files, self.split_seed, holdout)
        elif protocol == "kfold":
            split = make_kfold_split(store.files, self.split_seed, folds, fold)
        else:
            split = make_split(store.files, self.split_seed)
        return nested_subset(split, train_size, self.split_seed) if train_size else split

    def describe(self, store: TensorStore, split: Split) -> dict[str, object]:
        """What a run needs to record to show which data it saw."""
        return {
            "dataset": self.name,
            "fingerprint": self.source.fingerprint,
            "charset": self.source.charset,
            "max_len": self.source.max_len,
            "split_seed": self.split_seed,
            **{f"n_{k}": v for k, v in split.sizes().items()},
            "split_digest": split_digest(store.files, split),
            "skipped": len(store.skipped),
        }


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    split_seed: int = 0,
    skip_bad: bool = False,
) -> Dataset:
    """Resolve a dataset name: ``captcha-v2``, ``synthetic:PRESET[,k=v...]``, ``folder:PATH``."""
    kind, _, arg = name.partition(":")
    if kind == "captcha-v2" and not arg:
        source = captcha_v2_source(data_dir)
    elif kind == "synthetic":
        source = synthetic_source(arg or "digits4", name=name)
    elif kind == "folder" and arg:
        source = folder_source(arg, name=name)
    else:
        raise DataError(
            f"unknown dataset {name!r}; use captcha-v2, synthetic:PRESET (presets: "
            f"{', '.join(SYNTHETIC_PRESETS)}) or folder:PATH"
        )
    return Dataset(source, split_seed, skip_bad)
