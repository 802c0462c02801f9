"""The one training and evaluation loop for every approach.

The decoded images live on the training device as uint8; each batch is drawn by index there,
augmented there and normalised there, so the hot loop has no per-sample Python work. On CUDA it runs
under bf16 autocast with channels_last.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
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
from bench.approaches.registry import Approach
from bench.codecs import Codec, make_codec
from bench.data import Augment, Dataset, TensorStore
from bench.hparams import TrainConfig

EVAL_BATCH = 256
EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
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
    if cfg.schedule == "onecycle":  # fastai's fit_one_cycle: cosine, div 25, final div 1e5
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            pct_start=cfg.pct_start,
            div_factor=25.0,
            final_div_factor=1e5,
            cycle_momentum=cfg.optimizer in ("adam", "adamw", "sgd"),
            base_momentum=0.85,
            max_momentum=0.95,
        )
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use onecycle, plateau or none")


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
    def create(cls, store: TensorStore, cfg: TrainConfig, device: torch.device) -> Batcher:
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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    codec: Codec,
    batcher: Batcher,
    store: TensorStore,
    targets,
    idx: torch.Tensor,
    device: torch.device,
) -> Evaluation:
    model.eval()
    losses, predictions = [], []
    for part in idx.to(device).split(EVAL_BATCH):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(batcher(part))
        losses.append(codec.loss(logits, targets[part]) * len(part))
        predictions.extend(codec.decode(logits.float()))
    labels = [store.labels[i] for i in idx.tolist()]
    files = [store.files[i] for i in idx.tolist()]
    return Evaluation(float(torch.stack(losses).sum()) / len(idx), predictions, labels, files)


@torch.no_grad()
def measure_inference(
    model: nn.Module, batcher: Batcher, idx: torch.Tensor, device: torch.device, repeats: int = 20
) -> dict[str, float]:
    """Batched throughput over ``idx`` and single-image latency (p50, p95) of the eval model."""
    model.eval()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward(part: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(batcher(part))

    idx = idx.to(device)
    forward(idx[:1])  # warm-up
    sync()
    started = time.perf_counter()
    for part in idx.split(EVAL_BATCH):
        forward(part)
    sync()
    throughput = len(idx) / (time.perf_counter() - started)
    latencies = []
    for i in range(repeats):
        started = time.perf_counter()
        forward(idx[i % len(idx)].view(1))
        sync()
        latencies.append(time.perf_counter() - started)
    p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
    return {
        "infer_img_per_s": throughput,
        "latency_ms_p50": float(p50),
        "latency_ms_p95": float(p95),
    }


@dataclass
class TrainResult:
    approach: str
    hparams: dict[str, Any]
    data: dict[str, Any]
    device: str
    seed: int
    history: list[dict[str, float]]
    test: dict[str, float]
    params: int
    flops: int
    train_seconds: float
    img_per_s: float
    inference: dict[str, float]
    test_predictions: list[dict[str, Any]] = field(repr=False)
    model: nn.Module = field(repr=False)
    codec: Codec = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The final metrics, as printed by the CLI and written to result files."""
        return {
            "approach": self.approach,
            "dataset": self.data["dataset"],
            "seed": self.seed,
            "device": self.device,
            "epochs": self.hparams["epochs"],
            **{f"test_{k}": v for k, v in self.test.items()},
            "params": self.params,
            "flops": self.flops,
            "train_seconds": round(self.train_seconds, 1),
            "img_per_s": round(self.img_per_s, 1),
            **{k: round(v, 2) for k, v in self.inference.items()},
        }


def run_key(approach: str, hp: Mapping[str, Any], data: Mapping[str, Any], seed: int) -> str:
    """Identifies a training run's inputs, for its checkpoint."""
    text = json.dumps([approach, hp, data, seed], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Prepared:
    """Everything a training loop needs, built the same way for training and for ``perf``."""

    hp: dict[str, Any]
    cfg: TrainConfig
    device: torch.device
    store: TensorStore
    split: Any
    data: dict[str, Any]
    codec: Codec
    targets: Any
    model: nn.Module
    step_model: nn.Module  # the model for training steps: ``torch.compile``d with $BENCH_COMPILE
    params: int
    flops: int
    batcher: Batcher
    batch_size: int
    n_train: int
    steps_per_epoch: int


def prepare(
    approach: Approach,
    dataset: Dataset,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> Prepared:
    """Data store on the device, codec, model (channels_last on CUDA; compiled for training
    steps when ``$BENCH_COMPILE`` is set), batching arithmetic."""
    hp = approach.resolve(overrides)
    cfg = TrainConfig.from_hparams(hp)
    dev = resolve_device(device)
    store = dataset.store(cfg.channels, cfg.height, cfg.width)
    split = dataset.split(store)
    max_len = cfg.max_len or dataset.source.max_len
    codec = make_codec(
        approach.codec, dataset.source.charset, max_len, **cfg.codec_options(approach.codec)
    )
    model = approach.build_model(codec.num_classes, max_len, hp)
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
    return Prepared(
        hp=hp,
        cfg=cfg,
        device=dev,
        store=store,
        split=split,
        data=dataset.describe(store),
        codec=codec,
        targets=codec.encode(store.labels).to(dev),
        model=model,
        step_model=torch.compile(model) if os.environ.get("BENCH_COMPILE") else model,
        params=sum(p.numel() for p in model.parameters()),
        flops=flops,
        batcher=Batcher.create(store, cfg, dev),
        batch_size=batch_size,
        n_train=n_train,
        steps_per_epoch=-(-n_train // batch_size),
    )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    codec: Codec,
    x: torch.Tensor,
    targets: Any,
    cfg: TrainConfig,
) -> torch.Tensor:
    """One optimisation step (bf16 autocast on CUDA, gradient clipping); the detached loss."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        logits = model(x)
    loss = codec.loss(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()


def train(
    approach: str | Approach,
    dataset: Dataset,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    callbacks: Iterable[EpochCallback] = (),
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``approach`` on ``dataset``'s train split, validate every epoch, test at the end.

    With ``checkpoint_dir`` the state is saved after every epoch and an identical re-run resumes
    from it. Raises :class:`NonFiniteLossError` when the loss stops being finite.
    """
    approach = get_approach(approach) if isinstance(approach, str) else approach
    seed_everything(seed)
    run = prepare(approach, dataset, overrides, device)
    hp, cfg, dev, store, split = run.hp, run.cfg, run.device, run.store, run.split
    data, codec, targets, model, batcher = run.data, run.codec, run.targets, run.model, run.batcher
    batcher.generator = torch.Generator(device=dev).manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    batch_size, n_train, steps_per_epoch = run.batch_size, run.n_train, run.steps_per_epoch
    optimizer = make_optimizer(cfg, model.parameters())
    schedule = make_schedule(cfg, optimizer, steps_per_epoch)

    history: list[dict[str, float]] = []
    train_seconds, start_epoch = 0.0, 0
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir) / f"{approach.name}-{run_key(approach.name, hp, data, seed)}.pt"
        if ckpt.exists():
            state = torch.load(ckpt, map_location=dev, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if schedule is not None:
                schedule.load_state_dict(state["schedule"])
            order_rng.set_state(state["order_rng"])
            batcher.generator.set_state(
                state["augment_rng"].to(batcher.generator.get_state().device)
            )
            torch.set_rng_state(state["torch_rng"])
            history, train_seconds = state["history"], state["train_seconds"]
            start_epoch = len(history)

    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        desc=f"{approach.name}",
        unit="batch",
        disable=not progress,
        leave=False,
    )
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        started = time.perf_counter()
        perm = split.train[torch.randperm(len(split.train), generator=order_rng)].to(dev)
        loss_sum = torch.zeros((), device=dev)
        for idx in perm[:n_train].split(batch_size):
            x = batcher(idx, train=True)
            loss = train_step(run.step_model, optimizer, codec, x, targets[idx], cfg)
            if isinstance(schedule, torch.optim.lr_scheduler.OneCycleLR):
                schedule.step()
            loss_sum += loss.detach()
            bar.update()
        train_loss = loss_sum.item() / steps_per_epoch  # one host sync per epoch
        epoch_train = time.perf_counter() - started
        if not math.isfinite(train_loss):
            bar.close()
            raise NonFiniteLossError(
                f"{approach.name}: training loss is {train_loss} in epoch {epoch + 1}"
            )
        val = evaluate(model, codec, batcher, store, targets, split.val, dev).metrics
        if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            schedule.step(val["loss"])
        train_seconds += epoch_train
        stats = {
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_seq_acc": val["seq_acc"],
            "val_char_acc": val["char_acc"],
            "val_cer": val["cer"],
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - started,
            "img_per_s": n_train / epoch_train,
        }
        history.append(stats)
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val['seq_acc']:.3f}")
        if ckpt is not None:
            _save(
                ckpt,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict() if schedule is not None else None,
                    "order_rng": order_rng.get_state(),
                    "augment_rng": batcher.generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "train_seconds": train_seconds,
                },
            )
        for callback in callbacks:
            callback(epoch, stats)
    bar.close()

    test = evaluate(model, codec, batcher, store, targets, split.test, dev)
    inference = measure_inference(model, batcher, split.test, dev)
    rows = [
        {"file": f, "label": t, "prediction": p, "correct": p == t, "cer": metrics.cer([p], [t])}
        for f, t, p in zip(test.files, test.labels, test.predictions, strict=True)
    ]
    images_seen = len(history) * n_train
    return TrainResult(
        approach=approach.name,
        hparams=hp,
        data=data,
        device=str(dev),
        seed=seed,
        history=history,
        test=test.metrics,
        params=run.params,
        flops=run.flops,
        train_seconds=train_seconds,
        img_per_s=images_seen / max(train_seconds, 1e-9),
        inference=inference,
        test_predictions=rows,
        model=model,
        codec=codec,
    )


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write atomically, so an interrupted save never leaves a broken checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)
