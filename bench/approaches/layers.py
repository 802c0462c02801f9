"""Small building blocks the approaches share. Imports point down: approaches import this."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn


@dataclass(frozen=True)
class Io:
    """What a model is built for: images of ``channels`` x ``height`` x ``width`` in, logits over
    ``num_classes`` per step out, for labels of up to ``max_len`` characters."""

    num_classes: int
    max_len: int
    channels: int
    height: int
    width: int


def builder(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``build(io, **model_hp)`` as the registry calls a builder: ``(num_classes, max_len,
    channels, height, width, **model_hp)``. The result keeps ``build``'s name and module (the
    module's code is part of a run's code digest)."""

    @functools.wraps(build)
    def registered(
        num_classes: int, max_len: int, channels: int, height: int, width: int, **model_hp
    ) -> nn.Module:
        return build(Io(num_classes, max_len, channels, height, width), **model_hp)

    return registered


def conv(
    cin: int, cout: int, kernel: int | tuple[int, int] = 3, stride: int = 1, padding: int = 1
) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)


def conv_block(
    cin: int,
    cout: int,
    pool: int | tuple[int, int] | None = None,
    norm: bool = False,
    **conv_args,
) -> list[nn.Module]:
    """Source 001's unit, for a flat ``nn.Sequential``: conv, max-pool (with ``pool``), ReLU,
    batch norm (with ``norm``)."""
    layers = [conv(cin, cout, **conv_args)]
    if pool is not None:
        layers.append(nn.MaxPool2d(pool))
    layers.append(nn.ReLU())
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    return layers


def timm_body(backbone: str, pretrained: bool, channels: int) -> nn.Module:
    """Any timm model without its classifier and global pool: the feature map."""
    return timm.create_model(
        backbone, pretrained=pretrained, in_chans=channels, num_classes=0, global_pool=""
    )


FASTAI_XRESNET50 = "https://s3.amazonaws.com/fast-ai-modelzoo/xrn50_940.pth"
# fastai's stem (three ConvLayers: conv, BN) -> timm's ResNet-D deep stem
FASTAI_STEM = {
    "0.0": "conv1.0",
    "0.1": "conv1.1",
    "1.0": "conv1.3",
    "1.1": "conv1.4",
    "2.0": "conv1.6",
    "2.1": "bn1",
}


@torch.no_grad()
def load_fastai_stem(body: nn.Module) -> nn.Module:
    """The start source 000 had: its ``create_cnn_model(xresnet34, ...)`` (fastai's default
    ``pretrained=True``) calls ``xresnet34(pretrained=True)``, which loads fastai's ImageNet
    xresnet50 with ``strict=False``; only the stem's three conv + BN layers match by name and
    shape (the file's blocks use the older names ``convs`` and ``idconv``), the rest stays random.
    Downloaded once into torch hub's cache, where a copy can also be put by hand."""
    url = FASTAI_XRESNET50
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=False)
    except OSError as err:  # no network: URLError is an OSError
        raise RuntimeError(
            f"fastai_stem: cannot fetch {url} ({err}); put the file in "
            f"{torch.hub.get_dir()}/checkpoints/ or run without fastai_stem"
        ) from err
    stem = {
        f"{ours}.{key[len(theirs) + 1 :]}": value
        for key, value in state["model"].items()
        for theirs, ours in FASTAI_STEM.items()
        if key.startswith(f"{theirs}.")
    }
    needed = {f"{ours}.{t}" for ours in FASTAI_STEM.values() for t in ("weight", "bias")}
    needed -= {f"{FASTAI_STEM[conv]}.bias" for conv in ("0.0", "1.0", "2.0")}  # bias-free convs
    result = body.load_state_dict(stem, strict=False)
    if result.unexpected_keys or not needed <= stem.keys():
        raise ValueError(
            "fastai_stem needs a ResNet-D deep stem (e.g. backbone=resnet34d) and fastai's "
            f"xresnet50 file; unmatched: {result.unexpected_keys or sorted(needed - stem.keys())}"
        )
    return body


@torch.no_grad()
def fastai_init(module: nn.Module) -> nn.Module:
    """fastai's initialisation: ``init_cnn`` (kaiming-normal, fan_in, on convolutions and linear
    layers; biases 0) and its ``BatchNorm`` (bias 1e-3; the weights are left as they are, e.g.
    timm's zero-initialised last norm of each residual block, fastai's ``BatchZero``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.bias.fill_(1e-3)
    return module


def fastai_body(backbone: str, pretrained: bool, fastai_stem: bool, channels: int) -> nn.Module:
    """Source 000's ``create_body(xresnet34)`` as a timm body: fastai's initialisation unless
    ``pretrained`` (xresnet's own ``init_cnn``), then fastai's stem weights with ``fastai_stem``."""
    body = timm_body(backbone, pretrained, channels)
    if not pretrained:
        fastai_init(body)
    if fastai_stem:
        load_fastai_stem(body)
    return body


@torch.no_grad()
def output_shape(module: nn.Module, io: Io) -> torch.Size:
    """Shape of ``module``'s output for one image (the module is put back in its mode)."""
    was_training = module.training
    module.eval()
    shape = module(torch.zeros(1, io.channels, io.height, io.width)).shape
    module.train(was_training)
    return shape


def step_size(features: nn.Module, io: Io) -> int:
    """Features per step of ``features``' map as :class:`ToSequence` reads it: channels x height."""
    _, c, h, _ = output_shape(features, io)
    return c * h


class ToSequence(nn.Module):
    """``(N, C, H, W)`` feature map -> ``(N, W, C * H)``: one step per column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, c * h, w).transpose(1, 2)


class Recurrent(nn.Module):
    """A batch-first LSTM or GRU that returns only its output sequence.

    With ``carry`` its final state is the next training batch's initial state (detached: no
    gradient flows back across batches), as source 003's loop does; :func:`reset_states` clears
    it (the trainer calls it at every epoch start), a batch of another size starts from zeros,
    and evaluation always does.
    """

    def __init__(
        self,
        kind: str,
        size: int,
        hidden: int,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        carry: bool = False,
    ):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = rnn(
            size,
            hidden,
            num_layers=layers,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
            batch_first=True,
        )
        self.out_features = hidden * (2 if bidirectional else 1)
        self.carry = carry
        self.state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.carry and self.training):
            return self.rnn(x)[0]
        state = self.state
        if state is not None and state_batch(state) != x.shape[0]:
            state = None
        out, state = self.rnn(x, state)
        self.state = (
            tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        )
        return out


def state_batch(state: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def reset_states(model: nn.Module) -> None:
    """Forget the carried state of every :class:`Recurrent` in ``model``."""
    for module in model.modules():
        if isinstance(module, Recurrent):
            module.state = None


class SequenceHead(nn.Module):
    """Feature extractor + columns as steps + a stack of layers over the sequence."""

    def __init__(self, features: nn.Module, sequence: nn.Module):
        super().__init__()
        self.features = features
        self.to_sequence = ToSequence()
        self.sequence = sequence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(self.to_sequence(self.features(x)))


class Positions(nn.Module):
    """``(N, C * L)`` logits -> ``(N, L, C)``: the multi-output heads of source 000."""

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len = max_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], self.max_len, -1)


def sequence_classifier(features: nn.Module, io: Io, *layers: nn.Module, size: int) -> nn.Module:
    """``features``, its columns as steps, ``layers`` over the sequence and a linear classifier
    of their ``size`` outputs into ``io.num_classes`` (built last)."""
    return SequenceHead(features, nn.Sequential(*layers, nn.Linear(size, io.num_classes)))


def recurrent_head(
    features: nn.Module, io: Io, hidden: int, dropout: float = 0.0, steps: int | None = None
) -> nn.Module:
    """Source 001's recurrent part: a 2-layer BiLSTM over the columns and a linear classifier.

    ``steps`` pools the columns to a fixed count (CE-CRNN reads exactly L positions).
    """
    if steps is not None and output_shape(features, io)[-1] != steps:
        features = nn.Sequential(features, nn.AdaptiveAvgPool2d((None, steps)))
    rnn = Recurrent("lstm", step_size(features, io), hidden, layers=2, dropout=dropout)
    return sequence_classifier(features, io, rnn, size=rnn.out_features)
