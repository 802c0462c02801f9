"""Source 001's CTC loop as the notebook wrote it, on the benchmark's source split.

A reference to hold ``bench`` against: the notebook's ``OCRDataset`` (PIL per item, raw 0..255
floats), ``CRNN`` / ``ModifiedCRNN``, ``Adadelta``, ``CTCLoss(zero_infinity=True)``, gradient
clipping at 3, a shuffled ``DataLoader`` without ``drop_last``, greedy decoding and torchmetrics'
``char_error_rate`` -- copied from ``../shared/seeds/001``, plotting left out. Only the file
lists come from ``bench`` (``make_holdout_split``, the split ``--set split=source`` trains on), so
both loops see the same images::

    python -m experiments.reference_001 --model crnn-modified --seed 0 --out ref.json

prints a line per epoch and writes the test CER, sequence accuracy and predictions as JSON (the
fields ``bench compare`` writes them in). ``--table`` pairs such runs with ``bench``'s on the same
test images and seeds, as ``bench ablate`` does::

    python -m experiments.reference_001 --table comparison.md \
        --runs reports/reproduction/crnn-modified-captcha-v2-seed*.json \
        --reference-runs reports/reproduction/reference-001/crnn-modified-seed*.json

``--swap`` puts one of bench's parts into the notebook's loop, to find which one a difference
between the loops comes from: ``model`` (bench's module, batch-first, same initial weights for a
seed), ``pixels`` (bench's decoded store through its batcher instead of PIL per item), ``order``
(bench's batch order: a permutation an epoch from a generator seeded with the seed, instead of
the ``DataLoader``'s draws from torch's global stream). The table groups runs by their swaps.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as f
from PIL import Image
from torchmetrics.functional.text import char_error_rate

from bench import ablation_table, get_approach, make_holdout_split, markdown

CHARS = string.digits + string.ascii_lowercase
CHAR_TO_LABEL = {char: label for label, char in enumerate(CHARS, start=1)}
LABEL_TO_CHAR = {label: char for char, label in CHAR_TO_LABEL.items()}


class OCRDataset(torch.utils.data.Dataset):
    """The notebook's dataset, over a given list of files."""

    def __init__(self, root: Path, files: list[str], width: int, height: int = 32):
        self.root, self.files, self.width, self.height = root, files, width, height

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int):
        image = Image.open(self.root / self.files[idx])
        image = image.resize((self.width, self.height)).convert("L")
        image = torch.from_numpy(np.array(image).astype(np.float32)).unsqueeze(0)
        target = torch.LongTensor([CHAR_TO_LABEL[x] for x in self.files[idx].split(".")[0]])
        return image, target


def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding)


class Columns(nn.Module):
    """The notebook's forward: convs, columns as a (T, N, C) sequence, 2-layer BiLSTM, linear."""

    def __init__(self, conv_layers: nn.Sequential, channels: int, num_classes: int):
        super().__init__()
        self.conv_layers = conv_layers
        self.rec_layers = nn.LSTM(channels, 256, bidirectional=True, num_layers=2)
        self.clf_layer = nn.Linear(2 * 256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_layers(x)
        batch_size, ch_num, height, width = x.size()
        x = x.view(batch_size, ch_num * height, width).permute(2, 0, 1)
        x, _ = self.rec_layers(x)
        return self.clf_layer(x)


def crnn(num_classes: int) -> nn.Module:
    """``CRNN`` (In [112]), input 32x100, 24 steps."""
    layers = nn.Sequential(
        conv(1, 64), nn.MaxPool2d(2, 2), nn.ReLU(),
        conv(64, 128), nn.MaxPool2d(2, 2), nn.ReLU(),
        conv(128, 256), nn.ReLU(),
        conv(256, 256), nn.MaxPool2d(kernel_size=(2, 1)), nn.ReLU(),
        conv(256, 512), nn.ReLU(),
        nn.BatchNorm2d(512), conv(512, 512), nn.ReLU(),
        nn.BatchNorm2d(512), nn.MaxPool2d(kernel_size=(2, 1)), conv(512, 512, 2, padding=0),
    )  # fmt: skip
    return Columns(layers, 512, num_classes)


def modified_crnn(num_classes: int) -> nn.Module:
    """``ModifiedCRNN`` (In [113]), input 32x176, 10 steps."""
    layers = nn.Sequential(
        conv(1, 64), nn.MaxPool2d(2, 2), nn.ReLU(),
        conv(64, 128, stride=2), nn.ReLU(),
        nn.BatchNorm2d(128), conv(128, 256, stride=2), nn.ReLU(),
        nn.BatchNorm2d(256), conv(256, 256, stride=2), nn.ReLU(),
        nn.BatchNorm2d(256), conv(256, 256, 2, padding=0),
    )  # fmt: skip
    return Columns(layers, 256, num_classes)


SWAPS = ("model", "pixels", "order")
# model, input width, batch, Adadelta lr, epochs: the notebook's In [156]-[95] and [116]-[123]
RECIPES = {
    "crnn": (crnn, 100, 8, 0.08, 60),
    "crnn-modified": (modified_crnn, 176, 128, 1.2, 40),
}


class BenchPixels(torch.utils.data.Dataset):
    """The same files' pixels as bench's trainer feeds them (its store and batcher)."""

    def __init__(self, run, files: list[str]):
        index = {name: i for i, name in enumerate(run.store.files)}
        self.run, self.rows = run, torch.tensor([index[name] for name in files])
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int):
        image = self.run.batch(self.rows[idx : idx + 1])[0]
        target = torch.LongTensor([CHAR_TO_LABEL[x] for x in self.files[idx].split(".")[0]])
        return image, target


class BenchOrder(torch.utils.data.Sampler):
    """bench's batch order: one permutation an epoch from a generator seeded with the seed."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size = size, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator)
        yield from (batch.tolist() for batch in order.split(self.batch_size))


class TimeMajor(nn.Module):
    """bench's model, whose logits are ``(N, T, C)``, in the notebook's ``(T, N, C)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).transpose(0, 1)


def bench_run(args: argparse.Namespace, files: list[str]):
    """bench's trainer for the same model and split, for ``--swap``'s parts (its split checked
    against the one this loop trains on)."""
    from bench import build_trainer, load_dataset, make_spec

    dataset = load_dataset(f"folder:{args.data_dir}", split_seed=args.split_seed)
    run = build_trainer(
        make_spec(args.model, dataset, {"split": "source"}, seed=args.seed), dataset
    )
    if [run.store.files[i] for i in run.split.train.tolist()] != files:
        raise SystemExit("bench's source split differs from this loop's: nothing to swap into")
    return run


def train_step(model: nn.Module, optimizer, criterion, images, targets) -> float:
    """The notebook's training step on one batch; returns its loss."""
    log_probas = f.log_softmax(model(images), dim=2)
    input_lengths = torch.LongTensor([log_probas.size(0)] * log_probas.size(1))
    target_lengths = torch.LongTensor([5 for _ in range(len(images))])
    loss = criterion(log_probas, targets, input_lengths, target_lengths)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(model: nn.Module, test_loader) -> tuple[list[str], list[str]]:
    """Greedy CTC decoding of the test set as the notebook does it: predictions, labels."""
    model.eval()
    predictions, truth = [], []
    for images, targets in test_loader:
        log_probas = f.log_softmax(model(images), dim=2)
        for pred_probas, true_res in zip(log_probas.permute((1, 0, 2)), targets, strict=True):
            pred = torch.unique_consecutive(torch.argmax(pred_probas, axis=1))
            predictions.append("".join(LABEL_TO_CHAR.get(e.item(), "") for e in pred))
            truth.append("".join(LABEL_TO_CHAR[e.item()] for e in true_res))
    return predictions, truth


def write_table(out: Path, runs: list[Path], reference_runs: list[Path], label: str) -> None:
    """bench's runs against a reference loop's (``label``), paired by seed on the same images."""
    records = {"bench": [json.loads(p.read_text()) for p in runs]}
    for path in reference_runs:  # grouped by the parts of bench swapped in (reference_001)
        record = json.loads(path.read_text())
        loop = " + bench ".join([label, *record.get("swap", [])])
        records.setdefault(loop, []).append(record)
    text = markdown(ablation_table("loop", records))
    out.write_text(text)
    print(text)


def run_reference(
    parser: argparse.ArgumentParser, label: str, train: Callable[[argparse.Namespace], dict]
) -> None:
    """The command line both reference loops share: ``train`` one run and write its record to
    ``--out``, or with ``--table`` tabulate bench's runs against the reference's (``label``)."""
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder of captcha PNGs")
    parser.add_argument("--out", type=Path, help="result file of the run")
    parser.add_argument("--table", type=Path, help="write the comparison table here instead")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="bench's result files")
    parser.add_argument("--reference-runs", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    if args.table:
        return write_table(args.table, args.runs, args.reference_runs, label)
    if args.out is None:
        parser.error("--out is required to train")
    args.data_dir = args.data_dir or Path(os.environ["BENCH_DATA_DIR"]) / "captcha_images_v2"
    result = train(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"test CER {result['test_cer']:.2%}, sequence accuracy {result['test_seq_acc']:.2%}")


def train(args: argparse.Namespace) -> dict:
    """The notebook's loop for ``args.model``; returns the run's record."""
    build, width, batch_size, lr, epochs = RECIPES[args.model]

    files = sorted(p.name for p in args.data_dir.glob("*.png"))
    split = make_holdout_split(files, args.split_seed, get_approach(args.model).defaults["holdout"])
    train_files = [files[i] for i in split.train.tolist()]
    run = bench_run(args, train_files) if args.swap else None
    train_set = OCRDataset(args.data_dir, train_files, width)
    test_set = OCRDataset(args.data_dir, [files[i] for i in split.test.tolist()], width)
    if "pixels" in args.swap:
        train_set, test_set = BenchPixels(run, train_set.files), BenchPixels(run, test_set.files)
    torch.manual_seed(args.seed)
    if "order" in args.swap:
        order = BenchOrder(len(train_set), batch_size, args.seed)
        train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=order)
    else:
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=len(test_set), shuffle=False)

    if "model" in args.swap:  # drawn in the notebook's order: the same weights as build's
        approach = get_approach(args.model)
        model = TimeMajor(approach.build_model(len(CHAR_TO_LABEL) + 1, 5, approach.defaults))
    else:
        model = build(len(CHAR_TO_LABEL) + 1)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=lr)
    criterion = nn.CTCLoss(zero_infinity=True)
    history = []
    for epoch in range(epochs):
        start, losses = time.perf_counter(), []
        model.train()
        for images, targets in train_loader:
            losses.append(train_step(model, optimizer, criterion, images, targets))
        seconds = time.perf_counter() - start
        predictions, truth = evaluate(model, test_loader)  # the notebook tests every epoch
        history.append(
            {
                "train_loss": float(np.mean(losses)),
                "val_seq_acc": float(
                    np.mean([p == t for p, t in zip(predictions, truth, strict=True)])
                ),
                "val_cer": char_error_rate(predictions, truth).item(),
                "seconds": seconds,
            }
        )
        print(
            f"{args.model} seed {args.seed} epoch {epoch + 1}/{epochs}: "
            f"train loss {history[-1]['train_loss']:.4f}, "
            f"test acc {history[-1]['val_seq_acc']:.2%}, {seconds:.1f} s",
            flush=True,
        )

    return {  # the last epoch's test readings: the model has not changed since
        "model": args.model,
        "swap": args.swap,
        "seed": args.seed,
        "split_seed": args.split_seed,
        "n_train": len(train_set),
        "n_test": len(test_set),
        "test_cer": history[-1]["val_cer"],
        "test_seq_acc": history[-1]["val_seq_acc"],
        "train_seconds": sum(h["seconds"] for h in history),
        "history": history,
        "predictions": [
            {"file": name, "label": label, "prediction": pred, "correct": pred == label}
            for name, label, pred in zip(test_set.files, truth, predictions, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(RECIPES), default="crnn-modified")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (init and shuffling)")
    parser.add_argument(
        "--swap", nargs="*", default=[], choices=SWAPS, help="bench's parts to use instead"
    )
    run_reference(parser, "notebook", train)


if __name__ == "__main__":
    main()
