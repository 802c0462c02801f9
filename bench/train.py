"""The one training and evaluation loop for every approach.

The decoded images live on the training device as uint8; each batch is drawn by index there,
augmented there and normalised there, so the hot loop has no per-sample Python work. On CUDA it runs
under the spec's precision (bf16 autocast by default) with channels_last.

A run is a :class:`~bench.spec.RunSpec`: :func:`prepare` builds what it needs (a
:class:`Trainer`, also used by ``perf``), :func:`train` runs the loop.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from bench import metrics
from bench.approaches import get_approach
from bench.approaches.layers import reset_states
from bench.codecs import Codec, make_codec
from bench.data import Augment, Dataset, Split, TensorStore
from bench.errors import NonFiniteLossError
from bench.graphs import StaticStep
from bench.hparams import TrainConfig
from bench.spec import RunSpec

EVAL_BATCH = 256
# optimizers whose momentum (Adam's beta1) the one-cycle schedule cycles, as fastai's does
CYCLED_MOMENTUM = ("adam", "adamw", "sgd")

EpochCallback = Callable[[int, dict[str, float]], None]


class EpochLines:
    """Trainer callback: one line per epoch that stays (written above any progress bar), as
    timm's train script prints them."""

    def __init__(self, spec: RunSpec, name: str | None = None):
        self.name = name or spec.label
        self.epochs = spec.cfg.epochs
        self.budget = spec.cfg.budget

    def __call__(self, epoch: int, stats: dict[str, float]) -> None:
        of = "" if self.budget else f"/{self.epochs}"
        spent = (
            f", {stats['elapsed_seconds']:.0f}/{self.budget:.0f} s of the budget"
            if self.budget
            else ""
        )
        tqdm.write(
            f"{self.name} epoch {epoch + 1}{of}: train loss {stats['train_loss']:.4f}, "
            f"val loss {stats['val_loss']:.4f}, val seq acc {stats['val_seq_acc']:.2%}, "
            f"val CER {stats['val_cer']:.2%}, {stats['epoch_seconds']:.1f} s{spent}",
            file=sys.stdout,
        )
        sys.stdout.flush()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """All parameters decayed alike, or without ``wd_bn_bias`` (fastai's default) two groups: the
    parameters of normalisation layers and every module's ``bias`` are not decayed."""
    if cfg.wd_bn_bias or not cfg.weight_decay:
        return [{"params": list(model.parameters())}]
    exempt: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
            exempt |= {id(p) for p in module.parameters(recurse=False)}
        elif isinstance(getattr(module, "bias", None), nn.Parameter):
            exempt.add(id(module.bias))
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) not in exempt]},
        {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0},
    ]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = param_groups(model, cfg)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # fastai's Adam: decoupled weight decay, beta2 0.99, eps 1e-5
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw, sgd or adadelta")


def make_schedule(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step schedules (one-cycle, linear) span ``epochs`` x ``steps_per_epoch`` steps; with a
    time budget :func:`schedule_position` moves them on the share of the budget used instead."""
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":  # fastai's fit_one_cycle: cosine, div 25, final div 1e5
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total_steps,
            pct_start=cfg.pct_start,
            div_factor=25.0,
            final_div_factor=1e5 / 25.0,  # torch divides the start lr, fastai the peak
            cycle_momentum=cfg.optimizer in CYCLED_MOMENTUM,
            base_momentum=0.85,
            max_momentum=0.95,
        )
    if cfg.schedule == "linear":  # decay to zero, as budgeted training recommends
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total_steps)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use onecycle, linear, plateau or none")


def count_flops(model: nn.Module, channels: int, height: int, width: int) -> tuple[int, int]:
    """Forward FLOPs for one image (torch's FlopCounterMode, on a CPU copy) and output steps.

    oneDNN is switched off while counting: its fused LSTM kernel is an op the counter cannot see,
    the plain implementation is a series of matrix products that it counts.
    """
    clone = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's note about TF32 on Intel GPUs
        with (
            torch.backends.mkldnn.flags(enabled=False),
            torch.no_grad(),
            FlopCounterMode(display=False) as counter,
        ):
            out = clone(torch.zeros(1, channels, height, width))
    return int(counter.get_total_flops()), out.shape[1]


def check_steps(name: str, codec: str, steps: int, max_len: int) -> None:
    """CTC needs a step per character, and 2L+1 for labels of repeated characters."""
    if codec == "ctc" and steps < max_len:
        raise ValueError(
            f"{name} emits {steps} steps, fewer than the longest label ({max_len} "
            "characters): give it a wider input (--set width=...)"
        )
    if codec == "ctc" and steps < 2 * max_len + 1:
        warnings.warn(
            f"{name} emits {steps} steps: labels of {max_len} characters with repeats "
            f"need up to {2 * max_len + 1}",
            stacklevel=2,
        )


@dataclass
class Batcher:
    """Turns a uint8 store on the device into normalised float batches."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    channels_last: bool
    augment: Augment | None = None
    generator: torch.Generator | None = None

    @classmethod
    def create(
        cls, store: TensorStore, cfg: TrainConfig, device: torch.device, seed: int
    ) -> Batcher:
        """The store on ``device``; augmentation draws from a device generator seeded ``seed``."""

        def stat(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, device=device, dtype=torch.float32).view(1, -1, 1, 1)

        return cls(
            images=(store.images.pin_memory() if device.type == "cuda" else store.images).to(
                device, non_blocking=True
            ),
            mean=stat(cfg.mean),
            std=stat(cfg.std),
            channels_last=device.type == "cuda",
            augment=Augment(cfg.rotate, cfg.brightness, cfg.contrast),
            generator=torch.Generator(device=device).manual_seed(seed),
        )

    def __call__(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = self.images[idx].float().div_(255)
        if train and self.augment is not None and self.augment.enabled:
            x = self.augment(x, self.generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@dataclass
class Evaluation:
    loss: float
    predictions: list[str]
    labels: list[str]
    files: list[str]

    @property
    def metrics(self) -> dict[str, float]:
        return {"loss": self.loss, **metrics.summarize(self.predictions, self.labels)}


@dataclass
class TrainResult:
    spec: RunSpec
    data: dict[str, Any]
    history: list[dict[str, float]]
    test: dict[str, float] | None  # None when the run evaluated validation only (a tuning trial)
    params: int
    flops: int
    train_seconds: float
    img_per_s: float
    inference: dict[str, float]
    predictions: list[dict[str, Any]] = field(repr=False)  # of the final evaluation's split
    model: nn.Module = field(repr=False)
    codec: Codec = field(repr=False)
    resumed_epochs: int = 0  # epochs taken from a checkpoint instead of trained here

    @property
    def approach(self) -> str:
        return self.spec.approach

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.spec.hparams)

    def summary(self) -> dict[str, Any]:
        """The final metrics, as printed by the CLI and written to result files."""
        return {
            "approach": self.spec.approach,
            "source": self.spec.source,
            "dataset": self.spec.dataset,
            "seed": self.spec.seed,
            "device": self.spec.device,
            "precision": self.spec.precision,
            "budget": self.spec.cfg.budget,
            "epochs": len(self.history),
            "steps": int(self.history[-1]["steps"]) if self.history else 0,
            **{f"test_{k}": v for k, v in (self.test or {}).items()},
            "params": self.params,
            "flops": self.flops,
            "train_seconds": round(self.train_seconds, 1),
            "img_per_s": round(self.img_per_s, 1),
            **{k: round(v, 2) for k, v in self.inference.items()},
        }


@dataclass
class Trainer:
    """What one run trains with, built by :func:`prepare` the same way for ``train`` and ``perf``:
    the data store on the device, codec and targets, model, optimizer and schedule."""

    spec: RunSpec
    cfg: TrainConfig
    device: torch.device
    store: TensorStore
    split: Split
    data: dict[str, Any]
    codec: Codec
    targets: Any
    model: nn.Module
    step_model: nn.Module  # the model for training steps: ``torch.compile``d with spec.compile
    optimizer: torch.optim.Optimizer
    schedule: Any
    params: int
    flops: int
    batcher: Batcher
    batch_size: int
    n_train: int
    steps_per_epoch: int
    static: StaticStep | None = None  # the captured step (spec.graphs), made by :func:`train`

    def autocast(self) -> torch.autocast:
        """The spec's precision; no cast cache under CUDA graphs (a captured step must cast the
        weights it reads at every replay, as torch's CUDA-graph notes ask)."""
        return torch.autocast(
            self.device.type,
            dtype=torch.bfloat16,
            enabled=self.spec.precision == "bf16",
            cache_enabled=not self.spec.graphs,
        )

    def batch(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Normalised images of store indices ``idx`` (on the device), augmented with ``train``."""
        return self.batcher(idx, train=train)

    def step(self, x: torch.Tensor, idx: torch.Tensor, graph_safe: bool = False) -> torch.Tensor:
        """One optimisation step on images ``x`` of store indices ``idx`` (gradient clipping as
        the config says); returns the detached loss. The schedule is stepped by the caller.
        ``graph_safe``: a loss that CUDA graphs can capture (see :mod:`bench.graphs`)."""
        with self.autocast():
            logits = self.step_model(x)
        loss = self.codec.loss(logits, self.targets[idx], graph_safe=graph_safe)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        """The training step on store indices ``idx``: captured with ``spec.graphs``, else
        eager (augmented batch, then :meth:`step`)."""
        if self.static is not None:
            return self.static(idx)
        return self.step(self.batch(idx, train=True), idx)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits (the caller puts the model in eval mode)."""
        with self.autocast():
            return self.model(x)

    @torch.no_grad()
    def evaluate(self, idx: torch.Tensor) -> Evaluation:
        self.model.eval()
        losses, predictions = [], []
        for part in idx.to(self.device).split(EVAL_BATCH):
            logits = self.forward(self.batch(part))
            losses.append(self.codec.loss(logits, self.targets[part]) * len(part))
            predictions.extend(self.codec.decode(logits.float()))
        labels = [self.store.labels[i] for i in idx.tolist()]
        files = [self.store.files[i] for i in idx.tolist()]
        loss = float(torch.stack(losses).sum()) / len(idx)
        return Evaluation(loss, predictions, labels, files)

    @torch.no_grad()
    def measure_inference(self, idx: torch.Tensor, repeats: int = 20) -> dict[str, float]:
        """Batched throughput over ``idx`` and single-image latency (p50, p95) of the eval model."""
        self.model.eval()
        idx = idx.to(self.device)

        def sync() -> None:
            if self.device.type == "cuda":
                torch.cuda.synchronize()

        self.forward(self.batch(idx[:1]))  # warm-up
        sync()
        started = time.perf_counter()
        for part in idx.split(EVAL_BATCH):
            self.forward(self.batch(part))
        sync()
        throughput = len(idx) / (time.perf_counter() - started)
        latencies = []
        for i in range(repeats):
            started = time.perf_counter()
            self.forward(self.batch(idx[i % len(idx)].view(1)))
            sync()
            latencies.append(time.perf_counter() - started)
        p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
        return {
            "infer_img_per_s": throughput,
            "latency_ms_p50": float(p50),
            "latency_ms_p95": float(p95),
        }


def run_data(spec: RunSpec, dataset: Dataset) -> tuple[TensorStore, Split, dict[str, Any]]:
    """The decoded store and split a spec trains on, and their description (logged params)."""
    cfg = spec.cfg
    store = dataset.store(*cfg.image_size)
    split = dataset.split(store, cfg.split, cfg.holdout, cfg.folds, spec.fold)
    return store, split, dataset.describe(store, split)


def prepare(spec: RunSpec, dataset: Dataset) -> Trainer:
    """Data store on the device, codec, model (channels_last on CUDA; compiled for training
    steps with ``spec.compile``), optimizer, schedule and batching arithmetic."""
    if dataset.source.fingerprint != spec.fingerprint or dataset.name != spec.dataset:
        raise ValueError(f"the spec is for {spec.dataset}, not the dataset given ({dataset.name})")
    approach = get_approach(spec.approach)
    cfg = spec.cfg
    dev = torch.device(spec.device)
    store, split, data = run_data(spec, dataset)
    max_len = cfg.max_len or dataset.source.max_len
    codec = make_codec(
        approach.codec,
        cfg.output_charset(dataset.source.charset),
        max_len,
        **cfg.codec_options(approach.codec),
    )
    model = approach.build_model(codec.num_classes, max_len, spec.hparams)
    flops, steps = count_flops(model, cfg.channels, cfg.height, cfg.width)
    check_steps(approach.name, approach.codec, steps, max_len)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    batch_size = min(cfg.batch_size, len(split.train))
    n_train = len(split.train)
    # a partial last batch is kept unless drop_last, or unless it is one image (BatchNorm cannot)
    if cfg.drop_last or n_train % batch_size == 1:
        n_train -= n_train % batch_size
    steps_per_epoch = -(-n_train // batch_size)
    optimizer = make_optimizer(cfg, model)
    return Trainer(
        spec=spec,
        cfg=cfg,
        device=dev,
        store=store,
        split=split,
        data=data,
        codec=codec,
        targets=codec.encode(store.labels).to(dev),
        model=model,
        step_model=torch.compile(model) if spec.compile else model,
        optimizer=optimizer,
        schedule=make_schedule(cfg, optimizer, steps_per_epoch),
        params=sum(p.numel() for p in model.parameters()),
        flops=flops,
        batcher=Batcher.create(store, cfg, dev, spec.seed),
        batch_size=batch_size,
        n_train=n_train,
        steps_per_epoch=steps_per_epoch,
    )


def checkpoint_path(spec: RunSpec, folder: Path) -> Path:
    """``<approach>-<code digest>-<run key>.pt``: the code digest in the name lets ``cache prune``
    find the checkpoints of code that has changed since."""
    return Path(folder) / f"{spec.approach}-{spec.code}-{spec.digest}.pt"


@dataclass
class LoopState:
    """What a checkpoint restores besides the trainer's weights: random streams and progress."""

    order_rng: torch.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def steps(self) -> int:
        return int(self.history[-1]["steps"]) if self.history else 0

    @property
    def images(self) -> int:
        return int(self.history[-1]["images"]) if self.history else 0

    def finished(self, cfg: TrainConfig) -> bool:
        """All epochs trained, or the time budget used up."""
        return len(self.history) >= cfg.epochs or 0 < cfg.budget <= self.train_seconds


def save_checkpoint(path: Path, run: Trainer, loop: LoopState) -> None:
    """Write atomically, so an interrupted save never leaves a broken checkpoint."""
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict() if run.schedule is not None else None,
        "order_rng": loop.order_rng.get_state(),
        "augment_rng": run.batcher.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": loop.history,
        "train_seconds": loop.train_seconds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, run: Trainer, loop: LoopState) -> None:
    state = torch.load(path, map_location=run.device, weights_only=False)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.schedule is not None:
        run.schedule.load_state_dict(state["schedule"])
    loop.order_rng.set_state(state["order_rng"])
    generator = run.batcher.generator
    generator.set_state(state["augment_rng"].to(generator.get_state().device))
    torch.set_rng_state(state["torch_rng"])
    loop.history, loop.train_seconds = state["history"], state["train_seconds"]


PER_STEP = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.LambdaLR)


def schedule_position(cfg: TrainConfig, steps: int, seconds: float, total_steps: int) -> int:
    """Where a per-step schedule stands after ``steps`` steps and ``seconds`` of training: the
    steps taken, or with a budget the same share of its length as of the budget used, whichever
    is further; at most its length, so a budgeted run ends on the schedule's last value."""
    position = steps
    if cfg.budget:
        position = max(position, int(seconds / cfg.budget * total_steps))
    return min(position, total_steps)


def step_schedule(run: Trainer, val_loss: float | None = None, position: int | None = None) -> None:
    """Per-step schedules after every batch (``val_loss`` None), moved to ``position`` (default:
    one step on); plateau after every epoch."""
    schedule = run.schedule
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
    if run.static is not None:
        run.static.refresh()  # the captured step reads the new values from device tensors


def train(
    spec: RunSpec,
    dataset: Dataset,
    callbacks: Iterable[EpochCallback] = (),
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    test: bool = True,
) -> TrainResult:
    """Train ``spec`` on ``dataset``'s train split, validate every epoch, then evaluate the test
    split (``test``) or the validation split again (tuning trials never see the test split).

    With ``checkpoint_dir`` the state is saved after every epoch and an identical re-run resumes
    from it (a finished one is reused, and says so). Raises :class:`NonFiniteLossError` when the
    loss stops being finite.
    """
    seed_everything(spec.seed)
    run = prepare(spec, dataset)
    dev, cfg, split, model = run.device, run.cfg, run.split, run.model
    loop = LoopState(order_rng=torch.Generator().manual_seed(spec.seed))
    ckpt = checkpoint_path(spec, checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        load_checkpoint(ckpt, run, loop)
        if loop.finished(cfg):
            print(
                f"{spec.approach}: reusing the finished checkpoint {ckpt} "
                f"({len(loop.history)} epochs); "
                "`python -m bench cache prune --all` (or --no-resume) trains again",
                file=sys.stderr,
                flush=True,
            )
    resumed = len(loop.history)
    if spec.graphs:
        run.static = StaticStep(run, capture=True)

    total_steps = cfg.epochs * run.steps_per_epoch
    bar = tqdm(  # in batches, or with a budget in seconds of it
        total=round(cfg.budget) if cfg.budget else total_steps,
        initial=round(loop.train_seconds) if cfg.budget else loop.steps,
        desc=spec.approach,
        unit="s" if cfg.budget else "batch",
        disable=not progress,
        leave=False,
    )
    steps, images = loop.steps, loop.images
    for epoch in range(resumed, cfg.epochs):
        if loop.finished(cfg):
            break
        model.train()
        reset_states(model)  # a carried recurrent state starts each epoch at zero
        started = time.perf_counter()
        perm = split.train[torch.randperm(len(split.train), generator=loop.order_rng)].to(dev)
        loss_sum = torch.zeros((), device=dev)
        epoch_steps, epoch_first_image = 0, images
        for idx in perm[: run.n_train].split(run.batch_size):
            loss_sum += run.train_step(idx)
            steps, epoch_steps, images = steps + 1, epoch_steps + 1, images + len(idx)
            seconds = loop.train_seconds + time.perf_counter() - started
            step_schedule(run, position=schedule_position(cfg, steps, seconds, total_steps))
            bar.update(round(min(seconds, cfg.budget)) - bar.n if cfg.budget else 1)
            if cfg.budget and seconds >= cfg.budget:
                break  # the budget ends mid-epoch: this epoch is validated as far as it got
        train_loss = loss_sum.item() / epoch_steps  # one host sync per epoch
        epoch_train = time.perf_counter() - started
        if not math.isfinite(train_loss):
            bar.close()
            raise NonFiniteLossError(
                f"{spec.approach}: training loss is {train_loss} in epoch {epoch + 1}"
            )
        val = run.evaluate(split.val).metrics
        step_schedule(run, val["loss"])
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
            "lr": run.optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - started,
            "img_per_s": (images - epoch_first_image) / epoch_train,
        }
        loop.history.append(stats)
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val['seq_acc']:.1%}")
        if ckpt is not None:
            save_checkpoint(ckpt, run, loop)
        for callback in callbacks:
            callback(epoch, stats)
    bar.close()

    final_idx = split.test if test else split.val
    final = run.evaluate(final_idx)
    rows = [
        {"file": f, "label": t, "prediction": p, "correct": p == t, "cer": metrics.cer([p], [t])}
        for f, t, p in zip(final.files, final.labels, final.predictions, strict=True)
    ]
    return TrainResult(
        spec=spec,
        data=run.data,
        history=loop.history,
        test=final.metrics if test else None,
        params=run.params,
        flops=run.flops,
        train_seconds=loop.train_seconds,
        img_per_s=loop.images / max(loop.train_seconds, 1e-9),
        inference=run.measure_inference(final_idx),
        predictions=rows,
        model=model,
        codec=run.codec,
        resumed_epochs=resumed,
    )
