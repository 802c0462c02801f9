"""Batches drawn by index from a uint8 store on the device, augmented and normalised there."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data import Augment, TensorStore
from bench.hparams import TrainConfig


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
