"""The static (CUDA-graph) training step: same numbers as the eager step, a capturable CTC loss,
and when graphs are on."""

import copy

import pytest
import torch
import torch.nn.functional as F

from bench.codecs import ctc_loss_dense
from bench.data import load_dataset
from bench.options import resolve_graphs
from bench.spec import make_spec
from bench.training import build_trainer, seed_everything
from bench.training.graphs import DeviceHyperparameters
from bench.training.loop import step_schedule

TINY = "synthetic:tiny,count=120"
SMALL = {"height": 32, "width": 96, "hidden": 32, "batch_size": 16, "epochs": 2}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize(
    ("steps", "max_len"), [(24, 5), (10, 5), (4, 3), (1, 1), (160, 4)], ids=str
)
def test_graph_safe_ctc_loss_matches_torch_in_value_and_gradient(steps, max_len):
    """Variable lengths, repeated characters (a blank between copies) and alignments that cannot
    fit (zero_infinity) included."""
    torch.manual_seed(steps)
    n, classes = 7, 12
    x = torch.randn(steps, n, classes, requires_grad=True)
    lengths = torch.randint(1, max_len + 1, (n,))
    targets = torch.randint(1, classes, (n, max_len))
    targets[1] = 3  # all repeats: needs 2L - 1 steps
    targets *= torch.arange(max_len) < lengths[:, None]
    reference = F.ctc_loss(
        x.log_softmax(-1), targets, torch.full((n,), steps), lengths, zero_infinity=True
    )
    (expected,) = torch.autograd.grad(reference, x)
    loss = ctc_loss_dense(x.log_softmax(-1), targets, lengths)
    (gradient,) = torch.autograd.grad(loss, x)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(gradient, expected, rtol=1e-4, atol=1e-5)


def test_an_impossible_alignment_counts_zero_and_gets_no_gradient():
    x = torch.randn(3, 1, 5, requires_grad=True)
    loss = ctc_loss_dense(x.log_softmax(-1), torch.tensor([[2, 2, 2]]), torch.tensor([3]))
    loss.backward()
    assert loss.item() == 0 and torch.count_nonzero(x.grad) == 0


def flat(parameters) -> torch.Tensor:
    """The parameters as one vector (``parameters_to_vector`` refuses channels_last weights)."""
    return torch.cat([p.detach().reshape(-1) for p in parameters])


def make_runs(approach: str, overrides: dict):
    """Two identical trainers of one spec (same initial weights and augmentation stream)."""
    dataset = load_dataset(TINY)
    spec = make_spec(approach, dataset, overrides, device="cpu")
    runs = []
    for _ in range(2):
        seed_everything(0)
        run = build_trainer(spec, dataset)
        run.batcher.generator = torch.Generator().manual_seed(0)
        runs.append(run)
    return runs


@pytest.mark.parametrize(
    ("approach", "overrides"),
    [
        ("lstm-columns", {**SMALL, "optimizer": "adam", "lr": 3e-3}),  # CTC, Adam
        (  # CE, fastai's AdamW with one-cycle (cycled betas), undecayed norms, augmentation
            "ce-crnn",
            {
                "batch_size": 16,
                "epochs": 2,
                "optimizer": "adamw",
                "lr": 1e-3,
                "weight_decay": 0.01,
                "wd_bn_bias": False,
                "schedule": "onecycle",
                "rotate": 10.0,
                "brightness": 0.5,
                "contrast": 0.5,
                "grad_clip": 1.0,
            },
        ),
        (  # CTC, Adadelta, the learning rate cut by the plateau schedule
            "crnn",
            {"batch_size": 16, "epochs": 2, "schedule": "plateau", "plateau_patience": 0},
        ),
    ],
    ids=["ctc-adam", "ce-adamw-onecycle-augmented", "ctc-adadelta-plateau"],
)
def test_static_step_matches_the_eager_step(approach, overrides):
    """The step a CUDA graph captures, run uncaptured on CPU: static index buffers (a second one
    for the last partial batch), schedule values in tensors, the graph-safe loss. In lockstep
    (each step starts both from the eager trainer's weights, optimizer state and random streams;
    free-running, rounding differences grow about tenfold a step where Adam-type updates
    normalise near-zero gradients): the same loss and the same update, to rounding."""
    eager, static = make_runs(approach, overrides)
    static.use_static_step(capture=False)
    train = eager.split.train
    for step, idx in enumerate([train[:11], train[11:27], train[27:43]]):  # 11, 16, 16 images
        static.model.load_state_dict(eager.model.state_dict())
        static.optimizer.load_state_dict(copy.deepcopy(eager.optimizer.state_dict()))
        if static.schedule is not None:
            static.schedule.load_state_dict(eager.schedule.state_dict())
        static.static.refresh()
        static.batcher.generator.set_state(eager.batcher.generator.get_state())
        before = flat(eager.model.parameters()).clone()
        losses, updates, schedules = [], [], []
        for run in (eager, static):
            torch.manual_seed(step)  # dropout's stream
            losses.append(run.train_step(idx).item())
            step_schedule(run)
            step_schedule(run, val_loss=1.0)  # an epoch's end: the plateau schedule's step
            updates.append(flat(run.model.parameters()) - before)
            group = run.optimizer.param_groups[0]
            schedules.append([float(v) for v in (group["lr"], *group.get("betas", ()))])
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
        # measured: 1e-6 of the update (CE), 2e-3 (CTC: Adam normalises the rounding of
        # near-zero gradients); a wrong learning rate or beta is off by several percent
        assert (updates[1] - updates[0]).norm() < 1e-2 * updates[0].norm()
        assert schedules[1] == pytest.approx(schedules[0], rel=1e-6)  # what the graph reads
        hyper = static.static.hyper
        for group, lr in zip(static.optimizer.param_groups, hyper.lrs, strict=True):
            assert group["lr"] is lr  # the schedule's value is in the captured tensor
        cycled = overrides.get("schedule") == "onecycle"
        assert len(hyper.beta1s) == (len(static.optimizer.param_groups) if cycled else 0)
        for group, beta1 in zip(static.optimizer.param_groups, hyper.beta1s, strict=cycled):
            assert group["betas"][0] is beta1 and group["foreach"] is False
    assert sorted(static.static.buffers) == [11, 16]


@pytest.mark.parametrize("cycle", [False, True], ids=["plateau", "onecycle"])
def test_schedule_values_reach_the_device_tensor(cycle):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.99))
    schedule = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20)
        if cycle
        else torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    )
    hyper = DeviceHyperparameters(optimizer, torch.device("cpu"), beta1=cycle)
    (lr,) = hyper.lrs
    for loss in (2.0, 3.0):
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        schedule.step() if cycle else schedule.step(loss)  # in place, or a new float
        hyper.refresh()
    group = optimizer.param_groups[0]
    assert group["lr"] is lr
    expected = schedule.get_last_lr()[0] if cycle else 0.05
    assert float(lr) == pytest.approx(expected) and float(lr) != pytest.approx(0.1)
    if cycle:  # one-cycle moved beta1 off its start (0.95) into the captured tensor
        (beta1,) = hyper.beta1s
        assert group["betas"][0] is beta1 and group["foreach"] is False
        assert 0.85 < float(beta1) < 0.95
        warmed = (float(lr) / 0.1 - 1 / 25) / (1 - 1 / 25)  # share of the warm-up done, from lr
        assert float(beta1) == pytest.approx(0.95 - 0.1 * warmed, rel=1e-6)
    else:
        assert group["betas"] == (0.9, 0.99) and not hyper.beta1s  # floats, left alone


def test_graphs_are_on_only_for_cuda_runs_that_can_be_captured(capsys, monkeypatch):
    monkeypatch.setattr("bench.options._said", set())  # reasons said by earlier tests
    assert resolve_graphs("auto", "cpu", {}, False) is False
    assert resolve_graphs("auto", "cuda", {"optimizer": "adamw"}, False) is True
    assert resolve_graphs("off", "cuda", {}, False) is False
    assert resolve_graphs("auto", "cuda", {"carry_state": True}, False) is False
    assert resolve_graphs("on", "cuda", {"carry_state": True}, False) is False
    assert resolve_graphs("auto", "cuda", {}, True) is False  # torch.compile
    assert resolve_graphs("auto", "cuda", {"optimizer": "sgd"}, False) is False
    cycled = {"optimizer": "adamw", "schedule": "onecycle"}  # beta1 in a device tensor
    assert resolve_graphs("auto", "cuda", cycled, False) is True
    err = capsys.readouterr().err
    assert err.count("carry_state") == 1 and "torch.compile" in err  # each reason said once
    assert "SGD" in err
    with pytest.raises(ValueError, match="graphs=on needs CUDA"):
        resolve_graphs("on", "cpu", {}, False)
    with pytest.raises(ValueError, match="graphs='sometimes'"):
        resolve_graphs("sometimes", "cpu", {}, False)


def test_cpu_specs_never_capture():
    spec = make_spec("lstm-columns", load_dataset(TINY), SMALL, graphs="auto")
    assert spec.graphs is False and spec.params()["graphs"] is False


@cuda
@pytest.mark.parametrize(
    ("approach", "schedule"),
    [("lstm-columns", "none"), ("ce-crnn", "none"), ("ce-crnn", "onecycle")],
    ids=["ctc-adam", "ce-adam", "ce-adamw-onecycle"],
)
def test_captured_step_replays_what_the_eager_step_computes(approach, schedule):
    """Captured (after warm-up) and replayed on CUDA against the eager step, in fp32, with the
    schedule stepped after each step (one-cycle moves the learning rate and beta1)."""
    dataset = load_dataset(TINY)
    overrides = {  # capturable: Adam (torch's SGD is not), no state carried across batches
        **(SMALL if approach == "lstm-columns" else {}),
        "optimizer": "adamw" if schedule == "onecycle" else "adam",
        "schedule": schedule,
        "carry_state": False,
        "batch_size": 16,
    }
    spec = make_spec(approach, dataset, overrides, device="cuda", precision="fp32", graphs="off")
    runs = []
    for capture in (False, True):
        seed_everything(0)
        run = build_trainer(spec, dataset)
        run.batcher.generator = torch.Generator(device="cuda").manual_seed(0)
        if capture:
            run.use_static_step(capture=True)
        runs.append(run)
    train = runs[0].split.train.cuda()
    losses = []
    for run in runs:
        torch.manual_seed(1)  # dropout's stream
        # 3 warm-up steps, the capture (replayed once), 2 replays
        losses.append([])
        for i in range(6):
            losses[-1].append(run.train_step(train[16 * i : 16 * (i + 1)]).item())
            step_schedule(run)
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    assert 16 in runs[1].static.graphs
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    betas = [float(run.optimizer.param_groups[0]["betas"][0]) for run in runs]
    assert betas[1] == pytest.approx(betas[0], rel=1e-6)
    if schedule == "onecycle":
        assert 0.85 < betas[0] < 0.95  # moved by the schedule, into the captured step too


@cuda
def test_training_with_graphs_on_learns_like_eager():
    from tests.conftest import fit

    dataset = load_dataset(TINY)
    overrides = {**SMALL, "epochs": 3, "optimizer": "adam", "lr": 3e-3, "carry_state": False}
    results = [
        fit("lstm-columns", dataset, overrides, device="cuda", graphs=g, progress=False)
        for g in ("off", "on")
    ]
    assert results[1].spec.graphs and not results[0].spec.graphs
    losses = [[h["train_loss"] for h in r.history] for r in results]
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


@cuda
def test_a_failed_capture_trains_on_eagerly_with_working_random_streams(capsys):
    """A step that cannot be captured (a host read) falls back to eager steps, whose dropout and
    augmentation still draw: the failed capture leaves no generator in capture mode."""
    dataset = load_dataset(TINY)
    overrides = {"optimizer": "adam", "batch_size": 16, "dropout": 0.2}
    spec = make_spec("crnn-gru", dataset, overrides, device="cuda", precision="fp32", graphs="off")
    seed_everything(0)
    run = build_trainer(spec, dataset)
    run.batcher.generator = torch.Generator(device="cuda").manual_seed(0)
    run.use_static_step(capture=True)
    capturable = run.static._step

    def step_with_host_read(idx: torch.Tensor) -> torch.Tensor:
        loss = capturable(idx)
        loss.item()  # forbidden while capturing
        return loss

    run.static._step = step_with_host_read
    train = run.split.train.cuda()
    losses = [run.train_step(train[16 * i : 16 * (i + 1)]).item() for i in range(6)]
    assert "capture failed, training eagerly" in capsys.readouterr().err
    assert run.static.capture is False and not run.static.graphs
    assert all(torch.isfinite(torch.tensor(losses)))
    torch.nn.functional.dropout(torch.ones(8, device="cuda"), 0.5)  # the default generator
    torch.rand(8, device="cuda", generator=run.batcher.generator)  # the batcher's
