"""Why source 001's 17 never-used classes help its CRNN: the first epochs, measured.

Trains ``crnn`` (its recipe: Adadelta 0.08, batch 8, clipping at 3) for a few epochs on the
benchmark split with three output layers -- ``dataset`` (20 classes), ``alnum`` (37) and
``alnum-masked`` (37, the 17 unused logits held at -1e4: no probability, no gradient) -- and prints
per variant and epoch, as means over seeds: Adadelta's update size per layer group (RMS of its
running average of squared updates, ``acc_delta``, times the group's rate over the recipe's), the
gradient norm per group, the share of steps clipped, the probability of the blank and of the
unused classes on 64 validation images, and the validation sequence and character accuracy::

    BENCH_DATA_DIR=... python -m experiments.alphabet_dynamics --epochs 3 --seeds 0 1 2

The causal test: ``dataset-slowconv`` (20 classes, the convolutions' Adadelta rate cut to a third,
as the 37-class runs' conv updates are) and ``alnum-fastconv`` (37 classes, the convolutions' rate
tripled), trained long enough to leave CTC's plateau; the summary gives the first epoch at which
validation character accuracy reaches 50%::

    BENCH_DATA_DIR=... python -m experiments.alphabet_dynamics --epochs 20 \
        --variants dataset-slowconv,alnum-fastconv --out causal.csv

``alnum-masked`` and ``alnum-held`` (37 classes, the unused logits held at 0, about their initial
value: they take probability mass, but pass no gradient back) run the same way: which of the
unused classes' two effects, their share of the softmax or their gradient into the network,
changes when training leaves the plateau; ``alnum-heldlow`` holds them at -3 (4% of the
probability at initialisation instead of 46%).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import pandas as pd
import torch
from torch import nn

from bench import Trainer, build_trainer, load_dataset, make_spec, seed_everything

VARIANTS = ("dataset", "alnum", "alnum-masked")
# the value the unused classes' logits are held at. Their share of the probability at
# initialisation: masked none; held 17 of 37, as live ones start; heldlow 17e^-3 / (20 + 17e^-3), 4%
UNUSED_LOGIT = {"masked": -1e4, "held": 0.0, "heldlow": -3.0}
CONV_RATE = {"slowconv": 1 / 3, "fastconv": 3.0}  # the convolutions' share of Adadelta's rate


def groups_of(run: Trainer) -> dict[str, nn.Module]:
    return {
        "convs": run.model.features,
        "rnn": run.model.sequence[0],
        "head": run.model.sequence[-1],
    }


def group_norm(module: nn.Module) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()]))


def hold_logits(head: nn.Module, classes: torch.Tensor, value: float) -> None:
    """Make ``head`` output ``value`` for ``classes`` (a mask over its outputs), whatever its input:
    those logits pass no gradient back."""
    head.register_forward_hook(lambda module, inputs, out: out.masked_fill(classes, value))


def train_and_measure(dataset, variant: str, seed: int, epochs: int, grad_clip: float) -> list:
    """Rows of per-epoch measurements of one variant and seed."""
    seed_everything(seed)
    alphabet, _, change = variant.partition("-")  # e.g. alnum-held: 37 classes, unused held at 0
    # no clipping is a threshold never reached, so that every step's norm is still recorded
    hparams = {"alphabet": alphabet, "grad_clip": grad_clip or 1e9}
    run = build_trainer(make_spec("crnn", dataset, hparams, seed=seed), dataset)
    used = set(dataset.source.charset)
    unused = torch.tensor([False] + [c not in used for c in run.codec.charset])
    groups = groups_of(run)
    if (value := UNUSED_LOGIT.get(change)) is not None:
        hold_logits(groups["head"], unused, value)
    if (scale := CONV_RATE.get(change)) is not None:
        convs = set(groups["convs"].parameters())
        rest = [p for p in run.model.parameters() if p not in convs]
        defaults = run.optimizer.defaults  # the recipe's Adadelta, before its first step
        run.optimizer = torch.optim.Adadelta(
            [{"params": list(convs), "lr": defaults["lr"] * scale}, {"params": rest}], **defaults
        )
    grads: dict[str, list[float]] = defaultdict(list)

    def record(params, max_norm, *args, **kwargs):  # the trainer's clip_grad_norm_, recorded
        total = clip(params, max_norm, *args, **kwargs)
        grads["total"].append(total.item())
        for name, module in groups.items():
            grads[name].append(group_norm(module).item())
        return total

    clip, nn.utils.clip_grad_norm_ = nn.utils.clip_grad_norm_, record
    # Adadelta steps by lr * delta and keeps delta's running square: in the recipe's units,
    # a group stepped at another rate has its deltas scaled by the ratio of rates
    base = run.optimizer.defaults["lr"]
    rates = {p: group["lr"] for group in run.optimizer.param_groups for p in group["params"]}
    probe = run.split.val[:64]
    shuffle = torch.Generator().manual_seed(seed)
    rows = []
    try:
        for epoch in range(1, epochs + 1):
            grads.clear()
            run.model.train()
            order = run.split.train[torch.randperm(run.n_train, generator=shuffle)]
            for step in range(run.steps_per_epoch):
                run.train_step(order[step * run.batch_size : (step + 1) * run.batch_size])
            run.model.eval()
            log_probs = run.forward(run.batch(probe)).float().log_softmax(-1)
            row = {"variant": variant, "seed": float(seed), "epoch": float(epoch)}
            for name, module in groups.items():
                state = [
                    run.optimizer.state[p]["acc_delta"].flatten() * (rates[p] / base) ** 2
                    for p in module.parameters()
                ]
                acc = torch.cat(state)
                row[f"{name} update rms"] = acc.mean().sqrt().item()
                row[f"{name} grad norm"] = sum(grads[name]) / len(grads[name])
            row["clipped"] = sum(t > grad_clip > 0 for t in grads["total"]) / len(grads["total"])
            row["p(blank)"] = log_probs[..., 0].exp().mean().item()
            row["p(unused)"] = log_probs[..., unused].exp().sum(-1).mean().item()
            val = run.evaluate(run.split.val).metrics
            row["val seq acc"], row["val char acc"] = val["seq_acc"], val["char_acc"]
            rows.append(row)
            print(variant, ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "variant"))
    finally:
        nn.utils.clip_grad_norm_ = clip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--grad-clip", type=float, default=3.0, help="0: no clipping")
    parser.add_argument("--out", default=None, help="CSV of every row")
    args = parser.parse_args()
    dataset = load_dataset("captcha-v2")
    rows = [
        row
        for variant in args.variants.split(",")
        for seed in args.seeds
        for row in train_and_measure(dataset, variant, seed, args.epochs, args.grad_clip)
    ]
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    means = table.drop(columns="seed").groupby(["variant", "epoch"], sort=False).mean()
    print(means.to_string(float_format="{:.3g}".format))
    print(plateau_exits(table).to_string())


def plateau_exits(table: pd.DataFrame, level: float = 0.5) -> pd.DataFrame:
    """Per variant and seed: the first epoch that reads any character right (validation
    character accuracy above 0), the first whose accuracy reaches ``level`` (missing when none
    does) and the last epoch's sequence accuracy."""
    return table.groupby(["variant", "seed"], sort=False).apply(
        lambda runs: pd.Series(
            {
                "first read": runs.loc[runs["val char acc"] > 0, "epoch"].min(),
                "exit epoch": runs.loc[runs["val char acc"] >= level, "epoch"].min(),
                "last val seq acc": runs["val seq acc"].iloc[-1],
            }
        ),
        include_groups=False,
    )


if __name__ == "__main__":
    main()
