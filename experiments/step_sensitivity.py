"""How fast two copies of a training run drift apart after a tiny input perturbation.

Two copies of one approach's model and optimizer (its source recipe, ``--set split=source``)
train on the same batches; the second sees the pixels times ``1 + eps * N(0, 1)``. After every
step it prints both losses and, per weight, the distance between the copies as a share of the
distance the first copy has moved. A share that grows by a large factor a step means the loop is
chaotic: runs of two equivalent implementations part after a few steps, and only the outcome
distributions over seeds can be compared::

    BENCH_DATA_DIR=../shared/datasets python -m experiments.step_sensitivity --approach crnn
"""

from __future__ import annotations

import argparse
import copy

import torch

from bench import build_trainer, load_dataset, make_spec, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--approach", default="crnn")
    parser.add_argument("--dataset", default="captcha-v2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--eps", type=float, default=1e-7, help="relative pixel perturbation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    seed_everything(args.seed)
    dataset = load_dataset(args.dataset)
    run = build_trainer(make_spec(args.approach, dataset, {"split": "source"}), dataset)
    twin = copy.deepcopy(run)  # model, optimizer and the rest, sharing nothing
    start = copy.deepcopy(run.model.state_dict())
    run.model.train(), twin.model.train()
    noise = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        idx = run.split.train[step * run.batch_size : (step + 1) * run.batch_size]
        x = run.batch(idx, train=True)
        shaken = x * (1 + args.eps * torch.randn(x.shape, generator=noise))
        losses = run.step(x, idx).item(), twin.step(shaken, idx).item()
        ours, theirs = run.model.state_dict(), twin.model.state_dict()
        shares = {
            key: ((ours[key] - theirs[key]).norm() / (ours[key] - start[key]).norm()).item()
            for key in ours
            if ours[key].is_floating_point() and key.endswith("weight")
        }
        first, median = next(iter(shares)), torch.tensor([*shares.values()]).median()
        print(
            f"step {step + 1}: loss {losses[0]:.6f} / {losses[1]:.6f}; drift as a share of the "
            f"way moved: {first} {shares[first]:.1e}, median {median:.1e}, "
            f"max {max(shares.values()):.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
