"""The experiment scripts' own logic: what their tables and swaps claim to do, they do."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bench.data import load_dataset
from bench.training import Trainer
from experiments import alphabet_dynamics, lookalike_fit, reference_001
from tests.conftest import fit
from tests.test_train import FAST, TINY


def test_plateau_exit_is_the_first_epoch_at_the_level():
    rows = [  # a run that dips back under the level, and one that never reaches it
        ("a", 0, [0.0, 0.3, 0.6, 0.4, 0.9], [0.0, 0.0, 0.1, 0.0, 0.5]),
        ("b", 1, [0.0, 0.0, 0.2, 0.49, 0.3], [0.0, 0.0, 0.0, 0.0, 0.02]),
    ]
    table = pd.DataFrame(
        [
            {"variant": v, "seed": s, "epoch": e + 1, "val char acc": c, "val seq acc": q}
            for v, s, chars, seqs in rows
            for e, (c, q) in enumerate(zip(chars, seqs, strict=True))
        ]
    )
    exits = alphabet_dynamics.plateau_exits(table)
    assert exits.loc[("a", 0), "exit epoch"] == 3
    assert exits["first read"].tolist() == [2, 3]
    assert math.isnan(exits.loc[("b", 1), "exit epoch"])
    assert exits["last val seq acc"].tolist() == [0.5, 0.02]


@pytest.mark.parametrize("value", [-1e4, 0.0])
def test_held_logits_take_their_value_and_pass_no_gradient(value):
    """``alnum-masked`` / ``alnum-held``: the unused classes' logits are constant, so their rows
    of the head learn nothing and nothing flows back through them, while the others still do."""
    torch.manual_seed(0)
    head, unused = nn.Linear(6, 5), torch.tensor([False, True, False, True, False])
    alphabet_dynamics.hold_logits(head, unused, value)
    features = torch.randn(3, 6, requires_grad=True)
    logits = head(features)
    assert (logits[:, unused] == value).all() and (logits[:, ~unused] != value).all()
    logits.log_softmax(-1)[:, 0].sum().backward()
    assert (head.weight.grad[unused] == 0).all() and (head.weight.grad[~unused] != 0).all()
    reference = nn.Linear(6, 3)  # the same head without the held rows
    reference.load_state_dict({"weight": head.weight[~unused], "bias": head.bias[~unused]})
    free = features.detach().requires_grad_()
    reference(free).sum().backward()
    held = features.detach().requires_grad_()
    head(held).sum().backward()  # the held columns included: they add nothing
    assert torch.allclose(held.grad, free.grad)


def test_bench_order_swap_draws_the_batches_benchs_loop_trains_on(monkeypatch):
    """``reference_001.py --swap order`` feeds the notebook's loop bench's batches, epoch by
    epoch: recorded from bench's own training loop, not from a copy of its formula."""
    seen, original = [], Trainer.train_step

    def recording(self, idx):
        seen.append((self.split.train, idx.tolist()))
        return original(self, idx)

    monkeypatch.setattr(Trainer, "train_step", recording)
    fit("lstm-columns", load_dataset(TINY), {**FAST, "epochs": 2}, seed=5, progress=False)
    train_rows = seen[0][0]
    order = reference_001.BenchOrder(len(train_rows), FAST["batch_size"], 5)
    expected = [train_rows[batch].tolist() for _ in range(2) for batch in order]
    assert [idx for _, idx in seen] == expected
    assert expected[0] != expected[len(order)]  # a new permutation each epoch
    first_epoch = [row for batch in expected[: len(order)] for row in batch]
    assert sorted(first_epoch) == sorted(train_rows.tolist())


def test_reference_tables_group_runs_by_the_parts_swapped_in(tmp_path):
    reference = reference_001
    files = [f"{i:05d}.png" for i in range(20)]

    def record(path, seed, correct, swap=None):
        predictions = [{"file": f, "correct": i < correct} for i, f in enumerate(files)]
        run = {"seed": seed, "test_cer": 0.1, "test_seq_acc": correct / 20}
        path.write_text(json.dumps({**run, "predictions": predictions, "swap": swap or []}))
        return path

    runs = [record(tmp_path / f"bench{s}.json", s, 10) for s in (0, 1)]
    notebook = [record(tmp_path / f"nb{s}.json", s, 15, []) for s in (0, 1)]
    swapped = [record(tmp_path / "order0.json", 0, 12, ["order"])]
    out = tmp_path / "table.md"
    reference.write_table(out, runs, notebook + swapped, "notebook")
    lines = [line.split("|")[1].strip() for line in out.read_text().splitlines()[2:]]
    assert lines == ["bench", "notebook", "notebook + bench order"]
    assert "| 2 / 0 |" in out.read_text()  # the order run gains 2 images on bench's seed 0


def test_lookalike_figures_find_the_text_where_it_is_drawn():
    images = np.full((4, 50, 200), 240, dtype=np.uint8)
    images[:, 12:40, 30:120] = 10  # "text": a dark block
    images[:2, :, :20] = 200  # a darker left part of the background in half the images
    figures = lookalike_fit.layout_figures(images)
    assert figures["text_columns"] == [30, 119] and figures["text_rows"] == [12, 39]
    assert figures["dark_share"] == pytest.approx(28 * 90 / (50 * 200))
    shares = figures["grey_shares_0_30_100_200_256"]
    assert shares[0] == pytest.approx(28 * 90 / (50 * 200), abs=1e-4) and sum(shares) == 1


def test_the_real_vs_rendered_classifier_tells_apart_sets_that_differ():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 100, (160, 32, 64), dtype=np.uint8)  # small images: quick
    light = rng.integers(156, 256, (160, 32, 64), dtype=np.uint8)
    result = lookalike_fit.real_vs_rendered(dark, light, seed=0, epochs=3)
    assert result["test_images"] == 64 and result["accuracy"] == 1.0
    assert result["accuracy_95"][0] < 1.0 < result["accuracy_95"][1] + 1e-9
