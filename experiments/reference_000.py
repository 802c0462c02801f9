"""Source 000's first approach as the blog wrote it, in fastai, on the benchmark's source split.

A reference to hold ``bench``'s ``multihead`` against: the blog's ``open_image`` (PIL, RGB,
float / 255), ``CaptchaTransform`` and ``TfmdLists``, ``DataLoaders.from_dsets`` with
``Resize((50, 200), Squish)`` per item and ``Rotate(max_deg=10)``, ``Brightness`` and ``Contrast``
(``max_lighting=0.5, p=0.8, batch=False``) per batch, batch 8, ``create_cnn_model(xresnet34,
20 * 5)``, ``LabelSmoothingCrossEntropyFlat`` over the 5 positions, a plain ``Learner`` and
``fit_one_cycle(60, 3e-3)`` -- copied from ``../shared/seeds/000``, plotting left out. Only the
file lists come from ``bench`` (``make_holdout_split``, what ``--set split=source`` trains on), so
both see the same images. It needs fastai (``pip install fastai``; checked with 2.8.12)::

    python -m experiments.reference_000 --seed 0 --no-pretrained --out ref.json

``create_cnn_model``'s default ``pretrained=True`` downloads fastai's ImageNet xresnet50 and
loads its stem (see bench's ``fastai_stem``); ``--no-pretrained`` starts from scratch, as bench's
``multihead`` does by default. Prints fastai's line per epoch and writes the test (validation)
sequence accuracy, CER and predictions as JSON in the fields ``bench compare`` writes;
``--table`` pairs such runs with bench's, as ``reference_001.py --table`` does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import PIL
import torch
from torchmetrics.functional.text import char_error_rate

from bench import make_holdout_split
from experiments.reference_001 import run_reference


def train(args: argparse.Namespace) -> dict:
    """The blog's code, with fastai's names qualified; returns the run's record."""
    import fastai.vision.all as fv

    imgs = sorted(args.data_dir.glob("*.png"))
    label_mapper = "".join(sorted({char for f in imgs for char in f.stem}))
    l2i = {label_mapper[i]: i + 1 for i in range(len(label_mapper))}  # 0: UNKNOWN
    i2l = {v: k for k, v in l2i.items()}

    def label_func(path):
        return fv.tensor([l2i[c] for c in path.stem])

    def open_image(fname):
        img = PIL.Image.open(fname).convert("RGB")
        t = torch.Tensor(np.array(img))
        return t.permute(2, 0, 1).double() / 255.0

    class CaptchaImage(fv.fastuple):
        pass

    class CaptchaTransform(fv.Transform):
        def __init__(self, files):
            self.files = files

        def encodes(self, i):
            file = self.files[i]
            return CaptchaImage(fv.TensorImage(open_image(file)), label_func(file))

    fv.set_seed(args.seed)
    split = make_holdout_split([p.name for p in imgs], args.split_seed, 0.1)
    train_files = fv.L([imgs[i] for i in split.train.tolist()])
    valid_files = fv.L([imgs[i] for i in split.test.tolist()])
    train_tl = fv.TfmdLists(range(len(train_files)), CaptchaTransform(train_files))
    valid_tl = fv.TfmdLists(range(len(valid_files)), CaptchaTransform(valid_files))
    dls = fv.DataLoaders.from_dsets(
        train_tl,
        valid_tl,
        after_item=fv.Resize((50, 200), method=fv.ResizeMethod.Squish),
        after_batch=[
            fv.Rotate(max_deg=10),
            fv.Brightness(max_lighting=0.5, p=0.8, batch=False),
            fv.Contrast(max_lighting=0.5, p=0.8, batch=False),
        ],
        bs=8,
        num_workers=0,  # the blog's notebook used fastai's default workers: same batches, slower
    )
    n_class = len(i2l) + 1
    model = fv.create_cnn_model(fv.xresnet34, n_class * 5, pretrained=args.pretrained)
    crit = fv.LabelSmoothingCrossEntropyFlat()

    def loss_captcha(output, target):
        return crit(output.view(-1, 5, n_class), target)

    def char_accu(inp, targ, axis=-1):
        pred = inp.reshape(-1, 5, n_class).argmax(dim=-1)
        return (pred == targ).sum() / (pred.shape[0] * pred.shape[1])

    def captcha_accu(inp, targ, axis=-1):
        pred = inp.reshape(-1, 5, n_class).argmax(dim=-1)
        return ((pred == targ).all(axis=1)).sum() / targ.shape[0]

    learn = fv.Learner(dls, model, loss_captcha, metrics=[char_accu, captcha_accu])
    started = time.perf_counter()
    learn.fit_one_cycle(args.epochs, 3e-3)
    seconds = time.perf_counter() - started
    names = learn.recorder.metric_names[1:-1]  # train_loss, valid_loss, the metrics (no time)
    history = [dict(zip(names, map(float, v), strict=True)) for v in learn.recorder.values]

    preds, _ = learn.get_preds(dl=dls.valid)
    predictions = [
        "".join(i2l.get(int(i), "?") for i in row) for row in preds.view(-1, 5, n_class).argmax(-1)
    ]
    truth = [f.stem for f in valid_files]
    return {
        "model": "multihead",
        "seed": args.seed,
        "split_seed": args.split_seed,
        "pretrained": args.pretrained,
        "n_train": len(train_files),
        "n_test": len(valid_files),
        "test_cer": char_error_rate(predictions, truth).item(),
        "test_seq_acc": float(np.mean([p == t for p, t in zip(predictions, truth, strict=True)])),
        "train_seconds": seconds,
        "history": history,
        "predictions": [
            {"file": f.name, "label": t, "prediction": p, "correct": p == t}
            for f, t, p in zip(valid_files, truth, predictions, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="fastai's set_seed")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create_cnn_model's default (downloads fastai's xresnet50 for the stem)",
    )
    run_reference(parser, "fastai", train)


if __name__ == "__main__":
    main()
