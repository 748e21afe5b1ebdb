"""Generative baselines (the paper's B.4.1) trained like the experiment's MAGIC-Flow model.

Per fold a baseline sees exactly the flow's training data (:func:`magicflow.experiments.commands.fold_sets`,
augment offsets included) and on-the-fly augmentation, seeds, optimiser, learning-rate schedule
and device handling: training runs through :func:`magicflow.baselines.discriminative.train_baseline`
with a generative :class:`~magicflow.baselines.discriminative.Objective`, so best.pt (lowest
validation loss), last.pt (resumable state) and training.tsv/.png are written exactly as for the
discriminative baselines.

- ``glow``: normflows' multiscale Glow as ``magicflow bench`` builds it
  (:func:`magicflow.experiments.bench.build_glow_peer`: 3 levels x 8 blocks, the flow's depth, hidden widths
  from the experiment's preset), class-conditional base. Images in [0, 1] are dequantised with
  uniform noise of one 8-bit level, shifted to [-0.5, 0.5] and zero-padded to a multiple of 8; the
  loss is the negative log-likelihood in bits per dimension. Samples use ``samples.temperature``.
- ``cvae``: a conditional VAE: three stride-2 convolutions, the label's one-hot concatenated to
  the flattened features (encoder) and to the latent (decoder), a Gaussian decoder with one
  learned variance; the loss is the negative ELBO (Gaussian reconstruction log-likelihood + KL)
  per pixel. A sample is the decoder mean of a latent drawn from the prior.
- ``ddpm``: MONAI's ``DiffusionModelUNet`` (2-D, channels 32/64/64, attention at the coarsest
  level, class conditioning through ``num_class_embeds``) trained as a DDPM (``DDPMScheduler``,
  1000 steps, linear betas, the noise-prediction MSE) on images scaled to [-1, 1] and padded with
  -1 to a multiple of 8; samples by DDIM (``DDIMScheduler``, :data:`DDIM_STEPS` steps, eta 0).
  ``samples.temperature`` does not apply. The validation loss uses fixed noise and timesteps.

Samples are written by the flow's own :func:`magicflow.experiments.infer.write_samples`, so
``samples.npz`` has the layout evaluation reads: ``samples`` (K, per_class, 1, S, S) in [0, 1],
``classes``, ``seconds``, ``device``."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicflow.baselines import GENERATIVE
from magicflow.baselines.discriminative import Objective
from magicflow.errors import InputError
from magicflow.experiments.data import SliceSet
from magicflow.flow.layers import crop_image, pad_amounts, pad_image


# --------------------------------------------------------------------------- models
class GlowBaseline(nn.Module):
    """normflows' conditional Glow on the experiment's slices (see the module docstring)."""

    loss_name = "negative log-likelihood (bits/dim)"

    def __init__(self, num_classes: int, image_size: int, preset: str):
        super().__init__()
        from magicflow.experiments.bench import build_glow_peer, glow_peer_widths

        self.image_size = image_size
        self.pad = pad_amounts(image_size, 8)
        side = image_size + sum(self.pad)
        with warnings.catch_warnings():  # normflows' LU init calls a deprecated torch.lu
            warnings.simplefilter("ignore", UserWarning)
            self.flow = build_glow_peer(num_classes, side, glow_peer_widths(preset))
        self.dims = side * side

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        noise = torch.rand_like(x) if self.training else torch.full_like(x, 0.5)
        z = pad_image(x + (noise - 0.5) / 256 - 0.5, *self.pad, value=-0.5)
        return -self.flow.log_prob(z, y).mean() / (self.dims * math.log(2))

    @torch.no_grad()
    def generate(self, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        images, _ = self.flow.sample(len(y), y, temperature=temperature)
        return crop_image(images + 0.5, *self.pad)


class CVAE(nn.Module):
    """A small conditional VAE with a Gaussian decoder (see the module docstring)."""

    loss_name = "negative ELBO per pixel"

    def __init__(self, num_classes: int, image_size: int, latent: int = 64, width: int = 32):
        super().__init__()
        self.num_classes, self.image_size, self.latent = num_classes, image_size, latent
        self.pad = pad_amounts(image_size, 8)
        side = image_size + sum(self.pad)
        self.grid = (4 * width, side // 8, side // 8)
        flat = int(np.prod(self.grid))
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.to_posterior = nn.Linear(flat + num_classes, 2 * latent)
        self.from_latent = nn.Linear(latent + num_classes, flat)
        self.decoder = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
        )
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))  # the decoder's Gaussian std

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).float()

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(torch.cat([z, self._onehot(y)], 1)).view(len(z), *self.grid)
        return crop_image(torch.sigmoid(self.decoder(h)), *self.pad)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.encoder(pad_image(x, *self.pad, value=0.0))
        mu, log_var = self.to_posterior(torch.cat([h, self._onehot(y)], 1)).chunk(2, 1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if self.training else mu
        mean = self.decode(z, y)
        log_sigma = self.log_sigma.clamp(-7, 2)
        recon = (0.5 * ((x - mean) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        kl = 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(1)
        return ((recon + kl) / x[0].numel()).mean()

    @torch.no_grad()
    def generate(self, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        z = torch.randn(len(y), self.latent, device=y.device) * temperature
        return self.decode(z, y)


#: DDPM's training timesteps and DDIM's sampling steps
DDPM_STEPS, DDIM_STEPS = 1000, 50


class DDPMBaseline(nn.Module):
    """A class-conditional DDPM with MONAI's U-Net, sampled by DDIM (see the module docstring)."""

    loss_name = "noise-prediction MSE"

    def __init__(self, num_classes: int, image_size: int):
        super().__init__()
        try:
            import einops  # noqa: F401  (MONAI's attention blocks need it, and say so only mid-training)
        except ImportError:
            raise InputError(
                "the ddpm baseline needs einops (pip install einops==0.8.2; envs/magicflow-cpu.yaml and -cuda.yaml have it)"
            ) from None
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler

        self.image_size = image_size
        self.pad = pad_amounts(image_size, 8)
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            num_res_blocks=1,
            channels=(32, 64, 64),
            attention_levels=(False, False, True),
            num_head_channels=64,
            norm_num_groups=32,
            num_class_embeds=num_classes,
        )
        self.scheduler = DDPMScheduler(num_train_timesteps=DDPM_STEPS)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = pad_image(2 * x - 1, *self.pad, value=-1.0)
        generator = None if self.training else torch.Generator(device=x.device).manual_seed(0)
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        t = torch.randint(0, DDPM_STEPS, (len(x),), generator=generator, device=x.device)
        noisy = self.scheduler.add_noise(x, noise, t)
        return F.mse_loss(self.unet(noisy, t, class_labels=y), noise)

    @torch.no_grad()
    def generate(self, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        from monai.networks.schedulers import DDIMScheduler

        ddim = DDIMScheduler(num_train_timesteps=DDPM_STEPS)
        ddim.set_timesteps(DDIM_STEPS, device=y.device)
        side = self.image_size + sum(self.pad)
        x = torch.randn(len(y), 1, side, side, device=y.device)
        for t in ddim.timesteps:
            out = self.unet(x, torch.full((len(y),), int(t), device=y.device, dtype=torch.long), class_labels=y)
            x, _ = ddim.step(out, int(t), x)
        return crop_image((x + 1) / 2, *self.pad)


def build_generative(settings: dict[str, Any], num_classes: int) -> nn.Module:
    """The untrained model of a generative baseline.json (``name``, ``image_size``, ``preset``)."""
    name = settings["name"]
    if name not in GENERATIVE:
        raise InputError(f"unknown generative baseline {name!r}; known: {', '.join(GENERATIVE)}")
    if num_classes < 1:
        raise InputError(f"baseline {name}: needs at least 1 class, got {num_classes}")
    if name == "glow":
        return GlowBaseline(num_classes, settings["image_size"], settings.get("preset", "small"))
    if name == "ddpm":
        return DDPMBaseline(num_classes, settings["image_size"])
    return CVAE(num_classes, settings["image_size"])


# --------------------------------------------------------------------------- training
@torch.no_grad()
def _validate(model: nn.Module, data: SliceSet, device: torch.device, batch: int) -> dict[str, float]:
    model.eval()
    total = 0.0
    for s in range(0, len(data), batch):
        x, y = data.images[s : s + batch].to(device), data.labels[s : s + batch].to(device)
        total += float(model.loss(x, y)) * len(x)
    return {"val_loss": total / max(len(data), 1)}


def objective(model: nn.Module) -> Objective:
    """Train on the model's own loss; best.pt is the epoch with the lowest validation loss."""
    return Objective(
        loss=lambda m, x, y: m.loss(x, y),
        validate=_validate,
        score=lambda metrics: [-metrics["val_loss"]],
        selected_by="val_loss",
        loss_name=model.loss_name,
        check_size=False,
    )


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def draw_samples(
    model: nn.Module, classes: list[str], per_class: int, temperature: float, seed: int, device: torch.device, batch: int = 16
) -> np.ndarray:
    """(K, per_class, 1, S, S) samples clipped to [0, 1], as the flow's draw_samples returns them;
    deterministic given the seed."""
    model.eval()
    torch.manual_seed(seed)
    out = []
    for k in range(len(classes)):
        images = []
        for start in range(0, per_class, batch):
            y = torch.full((min(batch, per_class - start),), k, dtype=torch.long, device=device)
            images.append(model.generate(y, temperature).float().cpu())
        out.append(torch.cat(images).clamp(0, 1).nan_to_num(0.0).numpy())
    return np.stack(out)
