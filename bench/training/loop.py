"""The one training loop: epochs of steps, validation, checkpoints, the final evaluation."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench import interrupts, metrics
from bench.approaches.layers import reset_states
from bench.data import Dataset
from bench.errors import NonFiniteLossError
from bench.spec import RunSpec
from bench.training.callbacks import EpochCallback
from bench.training.checkpoint import LoopState, checkpoint_path, load_checkpoint, save_checkpoint
from bench.training.optim import PER_STEP, schedule_position
from bench.training.results import TrainResult
from bench.training.trainer import Trainer, build_trainer


def step_schedule(
    trainer: Trainer, val_loss: float | None = None, position: int | None = None
) -> None:
    """Per-step schedules after every batch (``val_loss`` None), moved to ``position`` (default:
    one step on); plateau after every epoch."""
    schedule = trainer.schedule
    if val_loss is None and isinstance(schedule, PER_STEP):
        if position is None:
            schedule.step()
        elif position > schedule.last_epoch:
            schedule.last_epoch = position - 1  # step() moves it on by one and sets the values
            schedule.step()
        else:
            return
    elif val_loss is not None and isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        schedule.step(val_loss)
    else:
        return
    if trainer.static is not None:
        trainer.static.refresh()  # the captured step reads the new values from device tensors


def train(
    spec: RunSpec,
    dataset: Dataset,
    callbacks: Iterable[EpochCallback] = (),
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    test: bool = True,
    on_start: Callable[[Trainer], None] | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``spec`` on ``dataset``'s train split, validate every epoch, then evaluate the test
    split (``test``) or the validation split again (tuning trials never see the test split).

    With ``checkpoint_dir`` the state is saved after every epoch and an identical re-run resumes
    from it (a finished one is reused, and says so). Raises :class:`NonFiniteLossError` when the
    loss stops being finite. ``on_start`` gets the trainer before the first epoch.
    ``initial_state``: the weights ``init=run:...`` names (see :func:`build_trainer`).
    """
    trainer = build_trainer(spec, dataset, initial_state=initial_state)
    if on_start is not None:
        on_start(trainer)
    cfg = trainer.cfg
    loop = LoopState(order_rng=torch.Generator().manual_seed(spec.seed))
    ckpt = checkpoint_path(spec, checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        resume(ckpt, trainer, loop)
    resumed = len(loop.history)
    bar = tqdm(  # in batches, or with a budget in seconds of it
        total=round(cfg.budget) if cfg.budget else cfg.epochs * trainer.steps_per_epoch,
        initial=round(loop.train_seconds) if cfg.budget else loop.steps,
        desc=spec.approach,
        unit="s" if cfg.budget else "batch",
        disable=not progress,
        leave=False,
    )
    with bar:
        for epoch in range(resumed, cfg.epochs):
            if loop.finished(cfg):
                break
            stats = train_epoch(trainer, loop, epoch, bar)
            if ckpt is not None:
                save_checkpoint(ckpt, trainer, loop)
            for callback in callbacks:
                callback(epoch, stats)
    return final_result(trainer, loop, test, resumed)


def resume(ckpt: Path, trainer: Trainer, loop: LoopState) -> None:
    load_checkpoint(ckpt, trainer, loop)
    if loop.finished(trainer.cfg):
        print(
            f"{trainer.spec.approach}: reusing the finished checkpoint {ckpt} "
            f"({len(loop.history)} epochs); "
            "`python -m bench cache prune --all` (or --no-resume) trains again",
            file=sys.stderr,
            flush=True,
        )


def train_epoch(trainer: Trainer, loop: LoopState, epoch: int, bar: tqdm) -> dict[str, float]:
    """One epoch (or what is left of the time budget), then validation; its statistics are
    appended to ``loop.history`` and returned."""
    cfg, split, dev = trainer.cfg, trainer.split, trainer.device
    total_steps = cfg.epochs * trainer.steps_per_epoch
    trainer.model.train()
    reset_states(trainer.model)  # a carried recurrent state starts each epoch at zero
    started = time.perf_counter()
    perm = split.train[torch.randperm(len(split.train), generator=loop.order_rng)].to(dev)
    loss_sum = torch.zeros((), device=dev)
    steps, images = loop.steps, loop.images
    epoch_steps, epoch_first_image = 0, images
    for idx in perm[: trainer.n_train].split(trainer.batch_size):
        loss_sum += trainer.train_step(idx)
        interrupts.check()  # a stop lost where it landed stops here
        steps, epoch_steps, images = steps + 1, epoch_steps + 1, images + len(idx)
        seconds = loop.train_seconds + time.perf_counter() - started
        step_schedule(trainer, position=schedule_position(cfg, steps, seconds, total_steps))
        bar.update(round(min(seconds, cfg.budget)) - bar.n if cfg.budget else 1)
        if cfg.budget and seconds >= cfg.budget:
            break  # the budget ends mid-epoch: this epoch is validated as far as it got
    train_loss = loss_sum.item() / epoch_steps  # one host sync per epoch
    epoch_train = time.perf_counter() - started
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(
            f"{trainer.spec.approach}: training loss is {train_loss} in epoch {epoch + 1}"
        )
    val = trainer.evaluate(split.val).metrics
    step_schedule(trainer, val["loss"])
    loop.train_seconds += epoch_train
    stats = {
        "elapsed_seconds": loop.train_seconds,  # training only, validation excluded
        "steps": steps,
        "images": images,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val_seq_acc": val["seq_acc"],
        "val_char_acc": val["char_acc"],
        "val_cer": val["cer"],
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "epoch_seconds": time.perf_counter() - started,
        "img_per_s": (images - epoch_first_image) / epoch_train,
    }
    loop.history.append(stats)
    bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val['seq_acc']:.1%}")
    return stats


def final_result(trainer: Trainer, loop: LoopState, test: bool, resumed: int) -> TrainResult:
    """The final evaluation (test split, or validation for a tuning trial) and its result."""
    final_idx = trainer.split.test if test else trainer.split.val
    final = trainer.evaluate(final_idx)
    rows = [
        {"file": f, "label": t, "prediction": p, "correct": p == t, "cer": metrics.cer([p], [t])}
        for f, t, p in zip(final.files, final.labels, final.predictions, strict=True)
    ]
    return TrainResult(
        spec=trainer.spec,
        data=trainer.data,
        history=loop.history,
        test=final.metrics if test else None,
        params=trainer.params,
        flops=trainer.flops,
        train_seconds=loop.train_seconds,
        img_per_s=loop.images / max(loop.train_seconds, 1e-9),
        inference=trainer.measure_inference(final_idx),
        predictions=rows,
        model=trainer.model,
        codec=trainer.codec,
        resumed_epochs=resumed,
    )
