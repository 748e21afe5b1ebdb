"""Baselines trained on exactly an experiment's slices, splits and augmentation, so that the
report can set MAGIC-Flow beside them (the paper's Table 3 for classification, Tables 1-2 for
generation).

This module is the registry only and imports no torch: the config is validated against it at
every Snakemake start. :mod:`magicflow.baselines.discriminative` trains and applies the
discriminative ones, :mod:`magicflow.baselines.generative` the generative ones.

Each entry of :data:`DISCRIMINATIVE` maps a config name to the timm architecture built for it
(``timm.create_model(architecture, pretrained=False, in_chans=1, num_classes=K)``, plus
``img_size`` for the transformers) and the smallest ``image_size`` it runs at. Those sizes were
measured with timm 1.0.31 (a forward pass of a zero image at each size 16-182) and are held
true by tests/test_baselines.py:

- resnet18, resnet50, swin_tiny, swin_base, swin, vit_r50_b16: every size 16-182. timm's Swin pads
  the patch grid and each stage's windows, and a window larger than its stage's feature map
  shrinks to it, so no size has to divide the window (7) or the patch (4);
- densenet121: 29 and up (its last pooling needs a 2x2 map);
- vit_b32: 32 and up (one 32x32 patch at least; a side that 32 does not divide loses its last
  ``side % 32`` rows and columns to the patch grid);
- inception_v3, inception_resnet_v2: 75 and up (their stems reduce 75 px to a 3x3 map)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    timm_name: str
    label: str  # as the paper's Table 3 names it
    min_size: int  # smallest image_size its forward pass accepts
    img_size: bool = False  # takes img_size= (the transformers: position embeddings, windows)
    note: str = ""


DISCRIMINATIVE: dict[str, Architecture] = {
    "resnet18": Architecture("resnet18", "ResNet-18", 16, note="small, for demos"),
    "resnet50": Architecture("resnet50", "ResNet-50", 16),
    "densenet121": Architecture("densenet121", "DenseNet-121", 29),
    "inception_v3": Architecture("inception_v3", "InceptionV3", 75),
    "inception_resnet_v2": Architecture("inception_resnet_v2", "IncepResNetV2", 75),
    "vit_b32": Architecture("vit_base_patch32_224", "ViT-B/32", 32, img_size=True),
    "vit_r50_b16": Architecture("vit_base_r50_s16_224", "ViT-ResNet/16", 16, img_size=True),
    "swin_tiny": Architecture("swin_tiny_patch4_window7_224", "Swin-T", 16, img_size=True),
    "swin_base": Architecture("swin_base_patch4_window7_224", "Swin-B", 16, img_size=True),
    "swin": Architecture("swin_base_patch4_window7_224", "Swin-ViT", 16, img_size=True, note="Swin-B, as swin_base"),
}


@dataclass(frozen=True)
class Generator:
    label: str  # as the report's Tables 1-2 name it
    architecture: str  # what is built, in words
    note: str = ""


#: generative baselines of ``model: generation`` experiments (the paper's B.4.1). No SNGAN: there
#: is no maintained implementation to build on, so none is offered.
GENERATIVE: dict[str, Generator] = {
    "glow": Generator(
        "Glow",
        "normflows multiscale Glow, 3 levels x 8 blocks, class-conditional base",
        note="as magicflow bench builds it: equal depth (24 steps), hidden widths from the experiment's preset",
    ),
    "cvae": Generator(
        "CVAE",
        "conditional VAE: conv encoder/decoder, one-hot label concatenated, Gaussian decoder",
        note="loss: reconstruction (Gaussian log-likelihood) + KL",
    ),
    "ddpm": Generator(
        "DDPM",
        "MONAI DiffusionModelUNet with class embeddings, DDPM training (1000 steps), DDIM sampling (50 steps)",
    ),
}


#: baselines of ``model: translation`` experiments (DUAL-GLOW's comparison): a regression network
#: and the trivial predictor every translation has to beat
TRANSLATION: dict[str, Generator] = {
    "unet": Generator(
        "U-Net (L1)",
        "MONAI 2-D U-Net, channels 16/32/64/128, one residual unit per level, L1 loss, sigmoid output",
        note="the autoencoder baseline of DUAL-GLOW's comparison; side information enters as constant input channels",
    ),
    "mean": Generator("Training mean", "the training set's mean target image, whatever the source"),
    "class_mean": Generator(
        "Class mean",
        "the training set's mean target image of the class the side information names (label or predicted label)",
        note="the trivial floor for a translator given that side information; with side: none, the training mean",
    ),
}


def kind_of(name: str) -> str | None:
    """'discriminative', 'generative', 'translation', or None for an unknown name."""
    if name in DISCRIMINATIVE:
        return "discriminative"
    if name in GENERATIVE:
        return "generative"
    if name in TRANSLATION:
        return "translation"
    return None


#: the experiment ``model`` each kind of baseline belongs to
EXPERIMENT_MODEL = {"discriminative": "classification", "generative": "generation", "translation": "translation"}
