"""A complete trainer for a run, built in one place for training, ``perf`` and the planner.

The decoded images live on the training device as uint8; each batch is drawn by index there,
augmented there and normalised there, so the hot loop has no per-sample Python work. On CUDA it runs
under the spec's precision with channels_last, its step captured as CUDA graphs with
``spec.graphs`` (:mod:`bench.training.graphs`).
"""

from __future__ import annotations

import copy
import random
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.approaches import get_approach
from bench.codecs import Codec, make_codec
from bench.data import Dataset, Split, TensorStore
from bench.hparams import TrainConfig
from bench.spec import RunSpec
from bench.training.batching import Batcher
from bench.training.graphs import StaticStep
from bench.training.optim import make_optimizer, make_schedule
from bench.training.results import Evaluation

EVAL_BATCH = 256
STEPS = ("eager", "static", "captured")  # how a trainer steps: see build_trainer
_NOTED: set[tuple[str, int]] = set()  # (approach, steps) whose CTC note was printed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    if codec == "ctc" and steps < 2 * max_len + 1 and (name, steps) not in _NOTED:
        _NOTED.add((name, steps))
        print(
            f"note: {name} emits {steps} steps: labels of {max_len} characters with repeats "
            f"need up to {2 * max_len + 1}",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class Trainer:
    """What one run trains with, made by :func:`build_trainer`: the data store on the device, codec
    and targets, model, optimizer, schedule and the training step (eager, or static)."""

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
    static: StaticStep | None = None  # the static (captured) step; None: eager steps

    def use_static_step(self, capture: bool) -> None:
        """Train with the static step from here on, captured as CUDA graphs with ``capture``."""
        self.static = StaticStep(self, capture=capture)

    def use_eager_step(self) -> None:
        self.static = None

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
        ``graph_safe``: a loss that CUDA graphs can capture (see :mod:`bench.training.graphs`)."""
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
        """The training step on store indices ``idx``: the static one where there is one, else
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
    split = dataset.split(store, cfg.split, cfg.holdout, cfg.folds, spec.fold, cfg.train_size)
    return store, split, dataset.describe(store, split)


def epoch_batches(images: int, batch_size: int, drop_last: bool) -> tuple[int, int, int]:
    """How an epoch over ``images`` training images is batched: the batch size (at most the
    images), the images used and the optimizer steps. A partial last batch is kept unless
    ``drop_last``, or unless it is one image (BatchNorm cannot train on it)."""
    batch = min(batch_size, images)
    used = images - images % batch if drop_last or images % batch == 1 else images
    return batch, used, -(-used // batch)


def build_trainer(
    spec: RunSpec,
    dataset: Dataset,
    step: str | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> Trainer:
    """The trainer of ``spec``, complete: seeded by the spec (the same weights every time), the data
    store on the device, codec, model (channels_last on CUDA; compiled for training steps with
    ``spec.compile``), optimizer, schedule, batching arithmetic, and its training step.

    ``step``: ``eager``; ``static`` (the capturable step on static buffers, run eagerly);
    ``captured`` (that step captured as CUDA graphs); default: ``captured`` with ``spec.graphs``,
    else ``eager``. ``initial_state``: the model's starting weights (``init=run:...``, fetched by
    the caller), in place of the approach's initialisation.
    """
    step = step or ("captured" if spec.graphs else "eager")
    if step not in STEPS:
        raise ValueError(f"step={step!r}: use {', '.join(STEPS)}")
    if dataset.source.fingerprint != spec.fingerprint or dataset.name != spec.dataset:
        raise ValueError(f"the spec is for {spec.dataset}, not the dataset given ({dataset.name})")
    seed_everything(spec.seed)
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
    if cfg.init:
        load_initial_state(model, initial_state, cfg.init)
    flops, steps = count_flops(model, cfg.channels, cfg.height, cfg.width)
    check_steps(approach.name, approach.codec, steps, max_len)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    batch_size, n_train, steps_per_epoch = epoch_batches(
        len(split.train), cfg.batch_size, cfg.drop_last
    )
    optimizer = make_optimizer(cfg, model)
    trainer = Trainer(
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
    if step != "eager":
        trainer.use_static_step(capture=step == "captured")
    return trainer


def load_initial_state(
    model: nn.Module, state: Mapping[str, torch.Tensor] | None, init: str
) -> None:
    """``state`` into ``model``; a missing state or one of another shape is a ``ValueError``
    naming ``init``."""
    if state is None:
        raise ValueError(f"init={init}: its weights were not given (bench.tracking fetches them)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise ValueError(f"init={init}: its weights do not fit this model: {detail}") from None
