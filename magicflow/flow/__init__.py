"""The MAGIC-Flow model library: layers, masks, couplings, the model, checkpoints, benchmark, and the
DUAL-GLOW style dual flow for image-to-image translation."""

from magicflow.flow.checkpoint import load_checkpoint, save_checkpoint
from magicflow.flow.coupling import DoubleAffineCoupling
from magicflow.flow.dual import DualFlow
from magicflow.flow.layers import ActNorm, InvConv1x1, crop_image, merge, pad_image, split, squeeze, unsqueeze
from magicflow.flow.masks import channelwise, checkerboard
from magicflow.flow.model import MagicFlow, validate_model_config
from magicflow.flow.nets import ClassificationNet, GenerationNet
from magicflow.flow.presets import PRESETS, preset_config

__all__ = [
    "ActNorm",
    "ClassificationNet",
    "DoubleAffineCoupling",
    "DualFlow",
    "GenerationNet",
    "InvConv1x1",
    "MagicFlow",
    "PRESETS",
    "channelwise",
    "checkerboard",
    "crop_image",
    "load_checkpoint",
    "merge",
    "pad_image",
    "preset_config",
    "save_checkpoint",
    "split",
    "squeeze",
    "unsqueeze",
    "validate_model_config",
]
