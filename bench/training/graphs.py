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

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

WARMUP_STEPS = 3  # eager steps per batch size before capture (cuDNN autotuning, optimizer state)


class DeviceHyperparameters:
    """The optimizer's learning rate, and beta1 where the schedule moves it, as device tensors
    that a captured step reads.

    Schedules write floats or fill the tensors in place; :meth:`refresh` copies what they wrote
    into the captured tensors and puts them back. A moving beta1 (one-cycle with Adam or AdamW,
    source 000's recipe) needs torch's single-tensor Adam (``foreach=False``), whose ``lerp_``
    takes a tensor weight: the foreach path reads a tensor beta on the host (an ``item()`` call
    that capture forbids). beta2 stays a float (``addcmul_``'s value
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


class CudaGraphs:
    """What a capture needs from torch's CUDA API, in one place: tests put a CPU stand-in here
    (``tests/conftest.py``) so that the capture path, its fallback and the code that times it
    run where there is no GPU."""

    def captures(self, device: torch.device) -> bool:
        """Whether steps on ``device`` can be captured."""
        return device.type == "cuda"

    def make_capturable(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        """The optimizer's capturable mode (its step counters on the device)."""
        for group in optimizer.param_groups:
            if "capturable" in group:
                group["capturable"] = True
        for state in optimizer.state.values():  # a resumed optimizer's step counters
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device)

    def graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def record(self, graph: Any, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Capture ``step`` into ``graph`` (capturing runs nothing); its output tensor, which
        every replay overwrites."""
        with torch.cuda.graph(graph):
            return step()

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        """A side stream for warm-up steps, as capture needs (no stray work on the default one)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    def default_generator(self, device: torch.device) -> torch.Generator:
        index = torch.cuda.current_device() if device.index is None else device.index
        return torch.cuda.default_generators[index]

    def save(self, generator: torch.Generator) -> Any:
        return generator.clone_state()

    def restore(self, generator: torch.Generator, state: Any) -> None:
        generator.graphsafe_set_state(state)


CAPTURE = CudaGraphs()  # replaced by a stand-in in the CPU tests


class Steppable(Protocol):
    """What a static step needs of a trainer (:class:`bench.training.Trainer` is one)."""

    optimizer: torch.optim.Optimizer
    schedule: Any
    device: torch.device
    batcher: Any  # its ``generator`` draws the augmentation

    def step(
        self, x: torch.Tensor, idx: torch.Tensor, graph_safe: bool = False
    ) -> torch.Tensor: ...

    def batch(self, idx: torch.Tensor, train: bool = False) -> torch.Tensor: ...


class StaticStep:
    """``step(idx) -> loss``: the trainer's training step on static buffers, captured per batch
    size with ``capture`` (CUDA), else run eagerly on the same buffers."""

    def __init__(self, run: Steppable, capture: bool):
        self.run = run
        self.capture = capture
        self.backend = CAPTURE
        self.buffers: dict[int, torch.Tensor] = {}
        self.calls: dict[int, int] = {}
        self.graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        if capture:
            self.backend.make_capturable(run.optimizer, run.device)
        schedule = run.schedule
        moves_beta1 = isinstance(schedule, torch.optim.lr_scheduler.OneCycleLR) and (
            schedule.cycle_momentum and schedule.use_beta1
        )
        self.hyper = DeviceHyperparameters(run.optimizer, run.device, beta1=moves_beta1)

    def refresh(self) -> None:
        """Call after every schedule step: the captured step reads the new values."""
        self.hyper.refresh()

    def reload(self) -> None:
        """Call after the optimizer's state was loaded (a resumed run): its step counters back on
        the device where captured, its learning rate (and beta1) back in the device tensors."""
        if self.capture:
            self.backend.make_capturable(self.run.optimizer, self.run.device)
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
        with self.backend.side_stream():
            return self._step(buffer)

    def _capture(self, size: int, buffer: torch.Tensor) -> torch.Tensor:
        """Capture this step (capturing runs nothing), then replay it as this call's step; if the
        step cannot be captured, train eagerly from here on and say why."""
        generators = [self.backend.default_generator(self.run.device), self.run.batcher.generator]
        before = [self.backend.save(generator) for generator in generators]
        graph = self.backend.graph()
        try:
            graph.register_generator_state(self.run.batcher.generator)
            loss = self.backend.record(graph, lambda: self._step(buffer))
        except RuntimeError as err:
            print(f"graphs: capture failed, training eagerly: {err}", file=sys.stderr, flush=True)
            self.capture = False
            # a capture that fails can leave a generator in capture mode (its epilogue never
            # ran): every later eager draw would then raise; the states saved before are clean
            for generator, state in zip(generators, before, strict=True):
                self.backend.restore(generator, state)
            self.run.optimizer.zero_grad(set_to_none=True)
            return self._step(buffer)
        self.graphs[size] = (graph, loss)
        graph.replay()
        return loss.clone()
