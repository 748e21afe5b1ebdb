"""MAGIC-Flow pipeline: preprocessing to MNI152, a conditional multiscale normalizing
flow, and the evaluation around it. Every pipeline stage is a plain function reachable
from the ``magicflow`` command line, so it runs and is tested without Snakemake."""

__version__ = "0.1.0"

from magicflow import _torchvision

_torchvision.install()  # before anything imports torchvision (timm, torchmetrics, MONAI): see the module
