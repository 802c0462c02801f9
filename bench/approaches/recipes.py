"""Defaults shared by the approaches of one source document: inputs, training recipes, bodies
(approaches import this)."""

from __future__ import annotations

# source 000 (fastai): fit_one_cycle(60, 3e-3) with fastai's Adam (decoupled weight decay 0.01),
# batch 8 with the last partial batch dropped, RGB in [0, 1], Rotate 10, Brightness and Contrast 0.5
SOURCE_000_TRAINING = dict(
    channels=3,
    height=50,
    width=200,
    mean=(0.0,),
    std=(1.0,),
    optimizer="adamw",
    lr=3e-3,
    weight_decay=0.01,
    wd_bn_bias=False,  # fastai's Learner leaves norm layers and biases undecayed
    batch_size=8,
    drop_last=True,
    epochs=60,
    schedule="onecycle",
    pct_start=0.25,
    rotate=10.0,
    brightness=0.5,
    contrast=0.5,
    holdout=0.1,  # RandomSplitter(valid_pct=0.1)
)
# the body of its first two approaches: create_body(xresnet34) ~ timm's resnet34d, from scratch
SOURCE_000_BODY = dict(backbone="resnet34d", pretrained=False, fastai_stem=False)

# source 001 (plain PyTorch) feeds raw 0..255 grayscale floats, 32 pixels high, and its heads
# read digits + lowercase (CHARS = string.digits + string.ascii_lowercase: 37 classes with blank)
SOURCE_001_INPUT = dict(
    channels=1,
    height=32,
    mean=(0.0,),
    std=(1 / 255,),
    alphabet="alnum",
    decode="resize-convert",  # Image.open(p).resize((W, 32)).convert('L')
)
# its three models' random_split(..., [train, test]) of 1070 files: 820/250, 896/174, 848/222
SOURCE_001_HOLDOUT = {"crnn": 250 / 1070, "crnn-modified": 174 / 1070, "ce-crnn": 222 / 1070}
# its CTC trainer (the CRNN and the modified CRNN): Adadelta, gradients clipped at norm 3
SOURCE_001_CTC = dict(optimizer="adadelta", grad_clip=3.0)


def source_001_training(name: str, **recipe) -> dict:
    """Source 001's input and model ``name``'s held-out share, then its ``recipe`` (width,
    optimizer, lr, batch size, epochs, ...)."""
    return {**SOURCE_001_INPUT, "holdout": SOURCE_001_HOLDOUT[name], **recipe}
