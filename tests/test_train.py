import math
import signal

import pytest
import torch
from torch import nn

import bench.approaches.registry as registry
from bench import interrupts
from bench.approaches import get_approach
from bench.approaches.registry import Approach
from bench.codecs import LabelError
from bench.data import load_dataset
from bench.training import NonFiniteLossError
from tests.conftest import fit

TINY = "synthetic:tiny,count=120"
# a small, quick configuration of source 003's column LSTM on 32x96 images
FAST = {
    "height": 32,
    "width": 96,
    "hidden": 32,
    "epochs": 3,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 3e-3,
}


def test_result_holds_history_metrics_and_costs():
    result = fit("lstm-columns", load_dataset(TINY), FAST, progress=False)
    assert len(result.history) == 3
    assert set(result.history[0]) == {
        "train_loss",
        "val_loss",
        "val_seq_acc",
        "val_char_acc",
        "val_cer",
        "lr",
        "epoch_seconds",
        "img_per_s",
        "elapsed_seconds",
        "steps",
        "images",
    }
    assert [h["steps"] for h in result.history] == [3, 6, 9]  # 84 training images, batch 32
    assert [h["images"] for h in result.history] == [84, 168, 252]
    seconds = [h["elapsed_seconds"] for h in result.history]
    assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(result.train_seconds)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert set(result.test) == {"loss", "seq_acc", "char_acc", "cer"}
    assert result.params == sum(p.numel() for p in result.model.parameters())
    assert result.flops > 0 and result.train_seconds > 0 and result.img_per_s > 0
    assert result.inference["infer_img_per_s"] > 0
    assert 0 < result.inference["latency_ms_p50"] <= result.inference["latency_ms_p95"]
    assert len(result.predictions) == result.data["n_test"] == 24
    assert result.data["split_digest"] and result.spec.device == "cpu"
    row = result.predictions[0]
    assert set(row) == {"file", "label", "prediction", "correct", "cer"}


def test_same_seed_same_result_and_other_seed_differs():
    a = fit("lstm-columns", load_dataset(TINY), {**FAST, "epochs": 1}, seed=1, progress=False)
    b = fit("lstm-columns", load_dataset(TINY), {**FAST, "epochs": 1}, seed=1, progress=False)
    c = fit("lstm-columns", load_dataset(TINY), {**FAST, "epochs": 1}, seed=2, progress=False)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    dataset = load_dataset(TINY)
    full = fit("lstm-columns", dataset, FAST, progress=False)

    def interrupt(epoch, stats):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            "lstm-columns",
            dataset,
            FAST,
            callbacks=[interrupt],
            checkpoint_dir=tmp_path,
            progress=False,
        )
    epochs_run = []
    resumed = fit(
        "lstm-columns",
        dataset,
        FAST,
        checkpoint_dir=tmp_path,
        progress=False,
        callbacks=[lambda epoch, stats: epochs_run.append(epoch)],
    )
    assert epochs_run == [2]  # epochs 0 and 1 came from the checkpoint
    for mine, theirs in zip(resumed.history, full.history, strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    assert resumed.test["loss"] == pytest.approx(full.test["loss"], rel=1e-5)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_lost_where_it_landed_stops_training_at_the_next_step(monkeypatch):
    # Python raises a kill's KeyboardInterrupt wherever the main thread is; in a finalizer it is
    # only printed ("Exception ignored in ...") and a suite went on to its end with exit code 0
    monkeypatch.setattr(interrupts, "_received", False)

    class Finalized:
        def __del__(self):
            interrupts._stop(signal.SIGTERM, None)

    def lost_stop(epoch, stats):
        if epoch == 0:
            Finalized()  # the KeyboardInterrupt is printed and dropped here

    steps, per_epoch = [], []

    def count_steps(trainer):
        step = trainer.train_step
        per_epoch.append(trainer.steps_per_epoch)
        trainer.train_step = lambda idx: steps.append(idx) or step(idx)

    with pytest.raises(KeyboardInterrupt):
        fit(
            "lstm-columns",
            load_dataset(TINY),
            FAST,
            callbacks=[lost_stop],
            progress=False,
            on_start=count_steps,
        )
    assert len(steps) == per_epoch[0] + 1  # the first step after the lost stop was the last


class NaNModel(nn.Module):
    def __init__(self, num_classes: int, *args, **kwargs):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.num_classes = num_classes

    def forward(self, x):
        return torch.full((x.shape[0], 20, self.num_classes), math.nan) * self.scale


def nan_approach(**train) -> Approach:
    """An approach (lstm-columns' training defaults) whose model only outputs NaN."""
    base = get_approach("lstm-columns")
    return Approach(
        name="nan",
        source="test",
        codec="ctc",
        summary="",
        build=NaNModel,
        train=dict(base.train, **train),
        model={},
        search_space=lambda trial: {"lr": trial.suggest_float("lr", 1e-3, 1e-1)},
    )


def test_nan_loss_stops_training_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "nan", nan_approach(height=32, width=96, epochs=2))
    with pytest.raises(NonFiniteLossError, match="nan: training loss is nan in epoch 1"):
        fit("nan", load_dataset(TINY), progress=False)


def test_label_longer_than_the_head_is_named():
    with pytest.raises(LabelError, match="has 3 characters; this ce head reads 1 to 2"):
        fit("ce-crnn", load_dataset(TINY), {"max_len": 2, "epochs": 1}, progress=False)


def test_too_few_ctc_steps_for_the_labels_is_an_error():
    with pytest.raises(ValueError, match="emits 2 steps, fewer than the longest label"):
        fit("lstm-columns", load_dataset(TINY), {**FAST, "width": 2}, progress=False)


def test_short_training_learns_a_small_synthetic_set():
    """A real training: a small timm body in the multihead approach reads 3-character captchas
    (chance: 1.6%). The same seed does not give the same digits on every run: the CPU kernels'
    multi-threaded reductions vary, and test accuracy after 15 epochs was measured at 88.5% to
    over 90%; the bound leaves room for that, not for a training that does not learn."""
    dataset = load_dataset("synthetic:tiny,charset=0123,count=2000")
    result = fit(
        "multihead",
        dataset,
        {
            "backbone": "test_resnet",
            "height": 32,
            "width": 96,
            "epochs": 15,
            "batch_size": 32,
            "lr": 5e-3,
            "dropout": 0.1,
            "rotate": 0.0,
            "brightness": 0.0,
            "contrast": 0.0,
        },
        progress=False,
    )
    assert result.test["seq_acc"] > 0.8, result.history
    assert result.test["cer"] < 0.08


def test_flops_include_the_recurrent_layers():
    """FlopCounterMode misses oneDNN's fused LSTM; the count must match the analytic figure."""
    from bench.training.trainer import count_flops

    lstm = nn.LSTM(60, 32, num_layers=2, bidirectional=True, batch_first=True)

    class Columns(nn.Module):
        def forward(self, x):
            return lstm(x.flatten(1, 2).transpose(1, 2))[0]

    steps, hidden = 5, 32
    per_step = 4 * 2 * ((60 * hidden + hidden**2) + (64 * hidden + hidden**2))  # 4 gates, mul+add
    assert count_flops(Columns(), 1, 60, steps) == (2 * steps * per_step, steps)


def test_checkpoints_are_keyed_by_the_code_and_a_finished_run_says_it_is_reused(
    tmp_path, capsys, monkeypatch
):
    import bench.spec as spec_module
    from bench.spec import make_spec
    from bench.training.checkpoint import checkpoint_path

    dataset = load_dataset(TINY)
    spec = make_spec("lstm-columns", dataset, {**FAST, "epochs": 1})
    first = fit("lstm-columns", dataset, {**FAST, "epochs": 1}, checkpoint_dir=tmp_path)
    path = checkpoint_path(spec, tmp_path)
    assert path.exists() and path.name == f"lstm-columns-{spec.code}-{spec.digest}.pt"
    again = fit("lstm-columns", dataset, {**FAST, "epochs": 1}, checkpoint_dir=tmp_path)
    assert again.resumed_epochs == 1 and again.history == first.history
    assert "reusing the finished checkpoint" in capsys.readouterr().err

    # the model's code changes: its old checkpoint must not be reused
    spec_module.code_digest.cache_clear()
    monkeypatch.setattr(spec_module, "RUN_MODULES", (*spec_module.RUN_MODULES, "bench.metrics"))
    edited = make_spec("lstm-columns", dataset, {**FAST, "epochs": 1})
    assert edited.code != spec.code and edited.digest != spec.digest
    retrained = fit("lstm-columns", dataset, {**FAST, "epochs": 1}, checkpoint_dir=tmp_path)
    assert retrained.resumed_epochs == 0
    assert "reusing" not in capsys.readouterr().err
    assert len(list(tmp_path.glob("*.pt"))) == 2
    spec_module.code_digest.cache_clear()


def test_spec_changes_with_every_setting_that_changes_a_result():
    from bench.spec import make_spec

    dataset = load_dataset(TINY)
    base = make_spec("lstm-columns", dataset, FAST)
    assert base.device == "cpu" and base.precision == "fp32" and base.source == "003"
    others = [
        make_spec("lstm-columns", dataset, {**FAST, "lr": 0.5}),
        make_spec("lstm-columns", dataset, FAST, seed=1),
        make_spec("lstm-columns", load_dataset(TINY, split_seed=1), FAST),
        make_spec("lstm-columns", dataset, FAST, precision="bf16"),
        make_spec("lstm-columns", dataset, FAST, compile=True),
        make_spec("lstm-columns", load_dataset("synthetic:tiny,count=100"), FAST),
    ]
    assert len({base.digest, *(o.digest for o in others)}) == 7
    assert make_spec("lstm-columns", dataset, FAST).digest == base.digest
    params = base.params()
    assert params["run_key"] == base.digest and params["hidden"] == FAST["hidden"]
    assert params["precision"] == "fp32" and params["fingerprint"] == dataset.source.fingerprint


def test_output_alphabet_sets_the_number_of_classes():
    """Source 001's heads read digits + lowercase (37 classes) whatever the dataset holds."""
    from bench.spec import make_spec
    from bench.training import build_trainer

    dataset = load_dataset(TINY)  # digits only

    def classes(approach, **overrides):
        spec = make_spec(approach, dataset, {"epochs": 1, **overrides})
        return build_trainer(spec, dataset).codec.num_classes

    assert classes("crnn") == classes("ce-crnn") == classes("crnn-modified") == 37
    assert classes("crnn", alphabet="dataset") == 11
    assert classes("lstm-columns", height=32, width=96) == 11
    letters = load_dataset("synthetic:tiny,charset=abc,count=60")
    spec = make_spec("lstm-columns", letters, {**FAST, "alphabet": "digits"})
    with pytest.raises(ValueError, match="alphabet='digits' lacks the dataset's characters 'abc'"):
        build_trainer(spec, letters)
    with pytest.raises(ValueError, match="alphabet='greek' is out of range"):
        make_spec("crnn", dataset, {"alphabet": "greek"})


def test_fastai_weight_decay_leaves_norm_layers_and_biases_undecayed():
    from bench.spec import make_spec
    from bench.training import build_trainer

    dataset = load_dataset(TINY)
    tiny = {"backbone": "test_resnet", "height": 32, "width": 96, "epochs": 1}
    run = build_trainer(make_spec("multihead", dataset, tiny), dataset)
    decayed, exempt = run.optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    norms = [m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)]
    exempt_ids = {id(p) for p in exempt["params"]}
    assert norms and all(id(m.weight) in exempt_ids for m in norms)
    assert all(p.ndim > 1 for p in decayed["params"])  # conv and linear weights only
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(run.model.parameters()))
    everything = build_trainer(
        make_spec("multihead", dataset, {**tiny, "wd_bn_bias": True}), dataset
    )
    assert len(everything.optimizer.param_groups) == 1


def test_a_time_budget_stops_training_on_time_and_ends_its_schedule(monkeypatch, request):
    import time

    from bench.training import Trainer

    steps, original = [], Trainer.train_step

    def timed(self, idx):  # each step's learning rate and duration
        started = time.perf_counter()
        loss = original(self, idx)
        steps.append((self.optimizer.param_groups[0]["lr"], time.perf_counter() - started))
        return loss

    monkeypatch.setattr(Trainer, "train_step", timed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy machine, two threads' steps stall for seconds
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    budget = 3.0
    result = fit(
        "lstm-columns",
        load_dataset(TINY),
        {**FAST, "epochs": 1000, "budget": budget, "schedule": "onecycle", "batch_size": 8},
        progress=False,
    )
    history = result.history
    assert len(history) < 1000 and history[-1]["steps"] == len(steps) >= 5
    # it stops at the first step that ends past the budget
    assert budget <= result.train_seconds <= budget + steps[-1][1] + 0.1
    assert history[-1]["elapsed_seconds"] == result.train_seconds
    assert result.summary()["epochs"] == len(history) and result.summary()["budget"] == budget
    # one-cycle ran on the share of the budget used: up to its peak, then down to its last
    # value (max / 1e5, as fastai ends it) as the budget ran out
    rates = [lr for lr, _ in steps]
    assert rates[0] < FAST["lr"] / 5 and max(rates) > FAST["lr"] / 2
    assert history[-1]["lr"] < 1.5 * FAST["lr"] / 1e5


def test_a_budget_ending_mid_epoch_keeps_the_partial_epoch():
    dataset = load_dataset("synthetic:tiny,count=2000")  # 1600 training images: slow epochs
    result = fit("lstm-columns", dataset, {**FAST, "budget": 0.3, "batch_size": 8}, progress=False)
    (epoch,) = result.history  # the budget ended inside the first epoch
    assert 0 < epoch["steps"] < 200 and epoch["images"] == 8 * epoch["steps"]
    assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"])


def test_schedule_position_follows_steps_or_the_budget_used():
    from bench.hparams import TrainConfig
    from bench.training.optim import schedule_position

    epochs_only = TrainConfig(epochs=2)
    assert [schedule_position(epochs_only, s, 99.0, 20) for s in (0, 7, 20)] == [0, 7, 20]
    budgeted = TrainConfig(epochs=2, budget=10.0)
    assert schedule_position(budgeted, 3, 5.0, 20) == 10  # half the budget: half the schedule
    assert schedule_position(budgeted, 15, 5.0, 20) == 15  # the cap on epochs is nearer
    assert schedule_position(budgeted, 21, 30.0, 20) == 20  # never past its end


@pytest.mark.parametrize("schedule", ["onecycle", "linear"])
def test_moving_a_schedule_by_position_equals_stepping_it(schedule):
    from bench.hparams import TrainConfig
    from bench.training.loop import step_schedule
    from bench.training.optim import make_schedule

    cfg = TrainConfig(epochs=3, schedule=schedule, lr=0.1, optimizer="adam")

    def lrs(by_position: bool) -> list[float]:
        optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.1)
        run = type("Run", (), {"schedule": make_schedule(cfg, optimizer, 4), "static": None})
        values = []
        for step in range(1, 13):
            optimizer.step()  # (no gradients: nothing moves; the schedule's order is kept)
            step_schedule(run, position=step if by_position else None)
            values.append(optimizer.param_groups[0]["lr"])
        return values

    stepped = lrs(False)
    assert lrs(True) == stepped and stepped[-1] < stepped[0]
    if schedule == "linear":
        assert stepped[-1] == 0.0 and stepped[5] == pytest.approx(0.1 * (1 - 6 / 12))


def test_onecycle_is_fastais_fit_one_cycle():
    """fastai's ``combined_cos(pct_start, lr/div, lr, lr/div_final)`` with its moms: starts at
    lr/25, peaks at lr after 25% of the steps, ends at lr/1e5 (torch's final factor divides the
    start, not the peak); beta1 goes 0.95 -> 0.85 -> 0.95."""
    from bench.hparams import TrainConfig
    from bench.training.optim import make_schedule

    cfg = TrainConfig(epochs=10, schedule="onecycle", lr=3e-3, optimizer="adamw", pct_start=0.25)
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=3e-3)
    schedule = make_schedule(cfg, optimizer, 100)
    lrs, betas = [], []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(3e-3 / 25) and max(lrs) == pytest.approx(3e-3, rel=1e-5)
    assert lrs.index(max(lrs)) == 250 - 1 and lrs[-1] == pytest.approx(3e-3 / 1e5, rel=1e-3)
    assert betas[0] == pytest.approx(0.95) and min(betas) == pytest.approx(0.85, rel=1e-5)


def test_budgets_read_as_durations_and_bad_ones_are_named():
    from bench.hparams import parse_duration

    assert [parse_duration(v) for v in ("8m", "90s", "1.5h", "240", 30, "2 min")] == [
        480.0,
        90.0,
        5400.0,
        240.0,
        30.0,
        120.0,
    ]
    assert get_approach("crnn").resolve({"budget": "8m"})["budget"] == 480.0
    with pytest.raises(ValueError, match=r"budget='eight minutes'.*not a duration"):
        get_approach("crnn").resolve({"budget": "eight minutes"})
    with pytest.raises(ValueError, match="budget=-1.0 is out of range"):
        get_approach("crnn").resolve({"budget": -1})
