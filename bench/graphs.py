"""A static-shape training step that CUDA graphs capture whole.

At small batches a training step is launch-bound: the GPU waits on Python and on hundreds of kernel
launches. :class:`StaticStep` runs the trainer's step on fixed buffers: the batch's store indices
are copied into a static index tensor, and gathering, augmentation with the device generator,
normalisation, forward, loss, backward, gradient clipping and the optimizer step (Adam, AdamW or
Adadelta, made capturable) all read device tensors; the schedule's learning rate (and one-cycle's
beta1) lives in device tensors that the host refreshes after each schedule step. With ``capture``
it warms up a few real steps on a side stream, captures one step per batch size (the full batch,
and the last partial batch where the source's loader keeps it) and replays it; without, it runs
the same static step eagerly, which is what the CPU tests compare with the plain step. Graphs
change speed, not the recipe: same batches, same schedule, same augmentation.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from bench.train import Trainer

WARMUP_STEPS = 3  # eager steps per batch size before capture (cuDNN autotuning, optimizer state)


class DeviceHyperparameters:
    """The optimizer's learning rate, and beta1 where the schedule moves it, as device tensors
    that a captured step reads.

    Schedules write floats or fill the tensors in place; :meth:`refresh` copies what they wrote
    into the captured tensors and puts them back. A moving beta1 (one-cycle with Adam or AdamW,
    source 000's recipe) needs torch's single-tensor Adam (``foreach=False``), whose ``lerp_``
    takes a tensor weight: the foreach path reads a tensor beta on the host (an ``item()`` call
    that capture forbids; seen on an H100, torch 2.11). beta2 stays a float (``addcmul_``'s value
    is a host number), as do the betas of runs whose schedule leaves them alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, beta1: bool = False):
        self.optimizer = optimizer
        groups = optimizer.param_groups

        def held(value) -> torch.Tensor:
            return torch.tensor(float(value), device=device, dtype=torch.float32)

        self.lrs = [held(group["lr"]) for group in groups]
        self.beta1s = [held(group["betas"][0]) for group in groups] if beta1 else []
        self.refresh()

    def refresh(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lrs, strict=True):
            group["lr"] = _fill(lr, group["lr"])
        for group, beta1 in zip(self.optimizer.param_groups, self.beta1s, strict=bool(self.beta1s)):
            group["betas"] = (_fill(beta1, group["betas"][0]), *group["betas"][1:])
            group["foreach"] = False  # also after an optimizer state was loaded


def _fill(tensor: torch.Tensor, value: float | torch.Tensor) -> torch.Tensor:
    """``tensor``, holding ``value`` (what a schedule wrote, unless it is the tensor itself)."""
    if value is not tensor:
        tensor.fill_(float(value))
    return tensor


class StaticStep:
    """``step(idx) -> loss``: the trainer's training step on static buffers, captured per batch
    size with ``capture`` (CUDA), else run eagerly on the same buffers."""

    def __init__(self, run: Trainer, capture: bool):
        self.run = run
        self.capture = capture
        self.buffers: dict[int, torch.Tensor] = {}
        self.calls: dict[int, int] = {}
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if capture:
            for group in run.optimizer.param_groups:
                if "capturable" in group:
                    group["capturable"] = True
            for state in run.optimizer.state.values():  # a resumed optimizer's step counters
                if torch.is_tensor(state.get("step")):
                    state["step"] = state["step"].to(run.device)
        schedule = run.schedule
        moves_beta1 = isinstance(schedule, torch.optim.lr_scheduler.OneCycleLR) and (
            schedule.cycle_momentum and schedule.use_beta1
        )
        self.hyper = DeviceHyperparameters(run.optimizer, run.device, beta1=moves_beta1)

    def refresh(self) -> None:
        """Call after every schedule step: the captured step reads the new values."""
        self.hyper.refresh()

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        return self.run.step(self.run.batch(idx, train=True), idx, graph_safe=True)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        size = len(idx)
        if size not in self.buffers:
            self.buffers[size] = torch.empty_like(idx)
        buffer = self.buffers[size]
        buffer.copy_(idx, non_blocking=True)
        if not self.capture:
            return self._step(buffer)
        if size in self.graphs:
            graph, loss = self.graphs[size]
            graph.replay()
            return loss.clone()
        self.calls[size] = self.calls.get(size, 0) + 1
        if self.calls[size] <= WARMUP_STEPS:
            return self._warm_up(buffer)
        return self._capture(size, buffer)

    def _warm_up(self, buffer: torch.Tensor) -> torch.Tensor:
        """A real step on a side stream, as capture needs (no stray work on the default stream)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self._step(buffer)
        torch.cuda.current_stream().wait_stream(side)
        return loss

    def _generators(self) -> list[torch.Generator]:
        """The generators a capture puts in capture mode: the device's default and the batcher's."""
        index = self.run.device.index
        default = torch.cuda.default_generators[
            torch.cuda.current_device() if index is None else index
        ]
        return [default, self.run.batcher.generator]

    def _capture(self, size: int, buffer: torch.Tensor) -> torch.Tensor:
        """Capture this step (capturing runs nothing), then replay it as this call's step; if the
        step cannot be captured, train eagerly from here on and say why."""
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.run.batcher.generator)
        generators = self._generators()
        before = [generator.clone_state() for generator in generators]
        try:
            with torch.cuda.graph(graph):
                loss = self._step(buffer)
        except RuntimeError as err:
            print(f"graphs: capture failed, training eagerly: {err}", file=sys.stderr, flush=True)
            self.capture = False
            # a capture that fails can leave a generator in capture mode (its epilogue never
            # ran): every later eager draw would then raise; the states cloned before are clean
            for generator, state in zip(generators, before, strict=True):
                generator.graphsafe_set_state(state)
            self.run.optimizer.zero_grad(set_to_none=True)
            return self._step(buffer)
        self.graphs[size] = (graph, loss)
        graph.replay()
        return loss.clone()
