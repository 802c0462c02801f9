"""Source 000, third approach: resnet34 cut at stride 16, two BiLSTMs, CTC, beam search."""

from __future__ import annotations

import timm
from torch import nn

from bench.approaches.layers import Io, Recurrent, builder, sequence_classifier, step_size
from bench.approaches.recipes import SOURCE_000_TRAINING
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import WEIGHT_DECAY, space


def truncated_backbone(name: str, pretrained: bool, io: Io, min_steps: int) -> nn.Module:
    """The deepest timm feature stage whose output is still ``min_steps`` columns wide.

    For resnet34 at 50x200 and 5-character labels this is layer3 (256 x 4 x 13): fastai's
    ``create_body(resnet34, cut=7)``.
    """
    probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=io.channels)
    for index in reversed(range(len(probe.feature_info))):
        stride = probe.feature_info.reduction()[index]
        if -(-io.width // stride) >= min_steps:
            return timm.create_model(
                name,
                pretrained=pretrained,
                features_only=True,
                out_indices=(index,),
                in_chans=io.channels,
            )
    raise ValueError(f"{name}: no stage keeps {min_steps} columns of a {io.width}-pixel-wide input")


class Squeeze(nn.Module):
    """timm feature extractors return a list; take its only map."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


@builder
def build(
    io: Io,
    *,
    backbone: str,
    pretrained: bool,
    seq_hidden: int,
    rnn1: int,
    rnn2: int,
    dropout: float,
) -> nn.Module:
    # CTC needs 2L+1 steps in the worst case (a blank between every repeated character)
    features = Squeeze(truncated_backbone(backbone, pretrained, io, 2 * io.max_len + 1))
    column = step_size(features, io)
    first = Recurrent("lstm", seq_hidden, rnn1)
    second = Recurrent("lstm", first.out_features, rnn2)
    return sequence_classifier(
        features,
        io,
        nn.Dropout(dropout),
        nn.Linear(column, seq_hidden),
        first,
        second,
        nn.Dropout(dropout),
        size=second.out_features,
    )


register(
    Approach(
        name="crnn-resnet",
        source="000",
        codec="ctc",
        summary="timm resnet34 cut to >= 2L+1 columns, map-to-seq, two BiLSTMs, CTC + beam",
        build=build,
        model=dict(
            backbone="resnet34", pretrained=False, seq_hidden=64, rnn1=256, rnn2=128, dropout=0.1
        ),
        train={
            **SOURCE_000_TRAINING,
            "decoder": "beam",
            "beam_width": 10,
            "emission_threshold": -4.605170185988091,
        },  # log(0.01), source 000's threshold
        search_space=space(
            lr=(3e-4, 1e-2),
            weight_decay=WEIGHT_DECAY,
            dropout=(0.0, 0.4),
            rnn1=[128, 256],
            batch_size=[8, 16, 32],
        ),
    )
)
