"""Images decoded once into a uint8 tensor, cached on disk, and the deterministic split."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from bench.data.sources import DataError, Source
from bench.paths import cache_dir

MODES = {1: "L", 3: "RGB"}
# convert-resize: convert to the channels, then a bilinear resize (the benchmark's); resize-convert:
# source 001's Image.open(p).resize((W, 32)).convert('L'), PIL's default filter for the file's mode
DECODE_ORDERS = ("convert-resize", "resize-convert")


@dataclass
class TensorStore:
    """``images``: uint8 ``(N, C, H, W)``; ``labels`` and ``files`` in the same order."""

    images: torch.Tensor
    labels: list[str]
    files: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __len__(self) -> int:
        return len(self.labels)


def decode_image(
    path: Path, channels: int, height: int, width: int, order: str = "convert-resize"
) -> np.ndarray:
    """Open, convert and resize one image (in ``order``, see :data:`DECODE_ORDERS`); a
    :class:`DataError` names the file if it cannot."""
    if channels not in MODES:
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()
            if order == "resize-convert":
                img = img.resize((width, height)).convert(MODES[channels])
            else:
                img = img.convert(MODES[channels])
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.array(img, dtype=np.uint8)
    except UnidentifiedImageError as err:
        raise DataError(f"{path}: not an image ({err})") from err
    except Image.DecompressionBombError as err:  # over twice PIL's pixel limit
        raise DataError(f"{path}: too many pixels ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or truncated image ({err})") from err
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def decode_source(
    source: Source,
    channels: int,
    height: int,
    width: int,
    skip_bad: bool = False,
    order: str = "convert-resize",
) -> TensorStore:
    """Decode every image of ``source`` (cached per fingerprint and size).

    A bad image raises :class:`DataError`, or with ``skip_bad`` is left out and listed in
    ``TensorStore.skipped``.
    """
    key = f"{source.fingerprint[:16]}-{channels}x{height}x{width}{'-skip' if skip_bad else ''}"
    key += "" if order == "convert-resize" else f"-{order}"
    cached = cache_dir() / "stores" / f"{key}.pt"
    if cached.exists():
        return TensorStore(**torch.load(cached, weights_only=False))
    images, labels, files, skipped = [], [], [], []
    for path, label in zip(
        tqdm(source.files, desc=f"decode {source.name}", leave=False), source.labels, strict=True
    ):
        try:
            images.append(decode_image(path, channels, height, width, order))
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append((path.name, str(err)))
            continue
        labels.append(label)
        files.append(path.name)
    if not images:
        raise DataError(f"{source.root}: no decodable images ({len(skipped)} skipped)")
    store = TensorStore(torch.from_numpy(np.stack(images)), labels, files, skipped)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
    os.close(fd)
    torch.save(vars(store), tmp)
    os.replace(tmp, cached)
    return store


@dataclass(frozen=True)
class Split:
    """Indices into a store's sorted file list; the same for every approach."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def make_split(
    files: list[str], seed: int = 0, val_share: float = 0.1, test_share: float = 0.2
) -> Split:
    """Shuffle with ``seed`` and cut test, then val, then train; depends only on the file names."""
    if not 0 <= val_share < 1 or not 0 < test_share < 1 or val_share + test_share >= 1:
        raise DataError(f"bad split shares: val {val_share}, test {test_share}")
    n = len(files)
    order = sorted(range(n), key=lambda i: files[i])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    shuffled = torch.tensor(order)[perm]
    n_test, n_val = round(n * test_share), round(n * val_share)
    if n - n_test - n_val < 1 or n_test < 1:
        raise DataError(f"{n} images are too few to split into train/val/test")
    return Split(
        train=shuffled[n_test + n_val :].sort().values,
        val=shuffled[n_test : n_test + n_val].sort().values,
        test=shuffled[:n_test].sort().values,
    )


def make_kfold_split(
    files: list[str], seed: int, folds: int, fold: int, val_share: float = 0.1
) -> Split:
    """Fold ``fold`` of ``folds``: the images shuffled with ``seed`` (by file name, as
    :func:`make_split`) are cut into ``folds`` near-equal parts; part ``fold`` is the test part,
    so across the folds every image is tested exactly once. The validation part (``val_share``
    of all images) is drawn from the other folds, so validation and tuning never see a test image;
    the rest trains."""
    n = len(files)
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(f"fold {fold} of {folds}: use folds >= 2 and 0 <= fold < folds")
    if n < 2 * folds:
        raise DataError(f"{n} images are too few for {folds} folds")
    order = torch.tensor(sorted(range(n), key=lambda i: files[i]))
    shuffled = order[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    parts = shuffled.tensor_split(folds)
    rest = torch.cat([p for k, p in enumerate(parts) if k != fold])
    # the validation images: a shuffle of the training folds of their own (seeded by the fold)
    rest = rest[
        torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed * 1009 + fold + 1))
    ]
    n_val = min(round(n * val_share), len(rest) - 1)
    return Split(
        train=rest[n_val:].sort().values,
        val=rest[:n_val].sort().values,
        test=parts[fold].sort().values,
    )


def nested_subset(split: Split, size: int, seed: int) -> Split:
    """``split`` with ``size`` of its training images: the first ``size`` of one shuffle of the
    training part (seeded by ``seed``), so a smaller subset lies inside every larger one and every
    approach trains on the same images; the validation and test parts are unchanged."""
    if not 1 <= size <= len(split.train):
        raise DataError(
            f"train_size={size}: the training part has {len(split.train)} images; use 1 to "
            f"{len(split.train)} (0: all of them)"
        )
    perm = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))
    return Split(train=split.train[perm[:size]].sort().values, val=split.val, test=split.test)


def make_holdout_split(files: list[str], seed: int, holdout: float) -> Split:
    """A source's two-way split: ``holdout`` of the images for testing, the rest for training;
    the validation part is the test part (the sources validated on their held-out images)."""
    two_way = make_split(files, seed, val_share=0.0, test_share=holdout)
    return Split(train=two_way.train, val=two_way.test, test=two_way.test)


def split_digest(files: list[str], split: Split) -> str:
    """A short hash of which files are in which part, to show two runs used the same split."""
    text = "|".join(
        ",".join(files[i] for i in part.tolist()) for part in (split.train, split.val, split.test)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
