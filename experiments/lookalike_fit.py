"""How close ``synthetic:v2style`` comes to captcha-v2: measured layout figures, a picture, and a
classifier trained to tell real images from rendered ones (the closer to 50% on held-out images,
the better the look-alike)::

    python -m experiments.lookalike_fit --out reports/data-efficiency/lookalike

writes ``lookalike.json`` (the figures and the classifier's accuracy with its 95% Wilson
interval) and ``lookalike.png`` (rendered left, real right). The classifier is timm's
``resnet10t`` (random init) on grey 50x200 images, the same number of real and rendered ones,
trained on 80% of the images and tested on the other 20% (norm layers evaluate with the last
epoch's average statistics: a few epochs leave their moving averages far behind).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from scipy.stats import binomtest

from bench import load_dataset


def layout_figures(images: np.ndarray) -> dict[str, float | list[int]]:
    """Grey-level figures of a stack of ``N x 50 x 200`` grey images."""
    dark = images < 100
    columns = np.flatnonzero(dark.mean(axis=(0, 1)) > 0.15)
    rows = np.flatnonzero(dark.mean(axis=(0, 2)) > 0.15)
    shares = np.histogram(images, bins=[0, 30, 100, 200, 256])[0] / images.size
    light = np.percentile(images, 90, axis=1).mean(0)
    return {
        "mean_grey": float(images.mean()),
        "dark_share": float(dark.mean()),
        "text_columns": [int(columns.min()), int(columns.max())],
        "text_rows": [int(rows.min()), int(rows.max())],
        "grey_shares_0_30_100_200_256": [round(float(s), 4) for s in shares],
        "background_left_right": [float(light[:20].mean()), float(light[-20:].mean())],
    }


def grey_images(name: str, data_dir: str | None = None) -> np.ndarray:
    """A dataset's images as grey ``N x 50 x 200`` arrays."""
    files = load_dataset(name, data_dir=data_dir).source.files
    return np.stack([np.asarray(Image.open(f).convert("L")) for f in files])


def real_vs_rendered(real: np.ndarray, fake: np.ndarray, seed: int, epochs: int) -> dict:
    """Held-out accuracy of a classifier telling ``real`` from ``fake``."""
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([real, fake])).float().div(255).unsqueeze(1)
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    x = (x - x[train].mean()) / x[train].std()  # standardised by the training images
    model = timm.create_model("resnet10t", pretrained=False, num_classes=2, in_chans=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for epoch in range(epochs):
        model.train()
        for norm in norms:  # evaluation uses this epoch's average statistics, not a lagging EMA
            norm.reset_running_stats()
            norm.momentum = None
        for batch in train[torch.randperm(len(train))].split(64):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            right = sum(int((model(x[b]).argmax(1) == y[b]).sum()) for b in test.split(256))
        print(f"classifier epoch {epoch + 1}/{epochs}: held-out accuracy {right / len(test):.2%}")
    interval = binomtest(right, len(test)).proportion_ci(method="wilson")
    return {
        "model": "timm resnet10t, random init, AdamW 1e-3, batch 64",
        "epochs": epochs,
        "train_images": cut,
        "test_images": len(test),
        "accuracy": right / len(test),
        "accuracy_95": [interval.low, interval.high],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and PNG")
    parser.add_argument("--data-dir", help="a folder holding captcha_images_v2/")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    real = grey_images("captcha-v2", args.data_dir)
    fake = grey_images(f"synthetic:v2style,count={len(real)},seed={args.seed}")
    figures = {"captcha-v2": layout_figures(real), "v2style": layout_figures(fake)}
    for name, values in figures.items():
        print(name, values)
    figures["classifier"] = real_vs_rendered(real, fake, args.seed, args.epochs)
    (args.out / "lookalike.json").write_text(json.dumps(figures, indent=2) + "\n")

    sheet = Image.new("L", (400, 500), 255)
    for i in range(10):
        sheet.paste(Image.fromarray(fake[i]), (0, 50 * i))
        sheet.paste(Image.fromarray(real[i * len(real) // 10]), (200, 50 * i))
    sheet.save(args.out / "lookalike.png", optimize=True)
    print(f"written: {args.out / 'lookalike.json'}, {args.out / 'lookalike.png'}")


if __name__ == "__main__":
    main()
