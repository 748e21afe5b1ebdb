"""The paper's published results per model (Tables 1-3 and 5), for the report's comparison tables.

Numbers only, copied from the paper (``shared/papers/000_63d97db5a99b474e.txt``): Table 3
(classification, mean ± std over folds), Tables 1-2 (generation: FID_Rad, KID_Rad, PRDC and
MS-SSIM) and Table 5 (training cost of the generative models on one A100, batch 8). Keyed by
the names the shipped config gives the paper's tasks (as :mod:`magicflow.evaluate.paper_counts`)
and by this pipeline's model names: ``magicflow`` and the baseline registry's
(:mod:`magicflow.baselines`). The paper's "ViT" (no pretraining, 32x32 patches) is ``vit_b32``,
"ViT-ResNet" ``vit_r50_b16``, "Swin-ViT" ``swin``. Models the paper reports but this pipeline
does not offer (SNGAN, StyleGAN2, ADC-GAN, MedFusion, TarFlow) are left out."""

from __future__ import annotations

#: Table 3 columns, in the paper's order (this pipeline's metric names)
TABLE3_METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "macro_precision", "macro_recall", "macro_f1")


def _table3(text: str) -> dict[str, dict[str, tuple[float, float]]]:
    rows = {}
    for line in text.strip().splitlines():
        name, *cells = line.split()
        values = [float(c) for c in cells if c != "±"]
        rows[name] = {m: (values[2 * i], values[2 * i + 1]) for i, m in enumerate(TABLE3_METRICS)}
    return rows


#: Table 3: task -> model -> metric -> (mean, std); the baselines pretrained as the paper says
#: (RadImageNet CNNs, ImageNet-21k ViT-ResNet, ImageNet-22k Swin, ViT from scratch)
PAPER_TABLE3: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "scanner_classification": _table3(
        """
        magicflow           0.90 ± 0.01  0.76 ± 0.02  0.97 ± 0.01  0.77 ± 0.03  0.76 ± 0.03  0.75 ± 0.03
        resnet50            0.91 ± 0.01  0.73 ± 0.02  0.98 ± 0.00  0.71 ± 0.06  0.73 ± 0.02  0.71 ± 0.04
        densenet121         0.91 ± 0.01  0.73 ± 0.03  0.98 ± 0.00  0.79 ± 0.03  0.73 ± 0.03  0.72 ± 0.03
        inception_v3        0.90 ± 0.02  0.72 ± 0.02  0.97 ± 0.00  0.67 ± 0.04  0.72 ± 0.02  0.69 ± 0.03
        inception_resnet_v2 0.88 ± 0.02  0.74 ± 0.03  0.97 ± 0.01  0.76 ± 0.03  0.74 ± 0.03  0.74 ± 0.03
        vit_b32             0.88 ± 0.01  0.70 ± 0.02  0.97 ± 0.00  0.72 ± 0.02  0.70 ± 0.02  0.70 ± 0.02
        vit_r50_b16         0.91 ± 0.01  0.73 ± 0.03  0.98 ± 0.00  0.74 ± 0.09  0.73 ± 0.03  0.71 ± 0.04
        swin                0.91 ± 0.00  0.73 ± 0.03  0.98 ± 0.01  0.71 ± 0.07  0.73 ± 0.03  0.71 ± 0.05
        """
    ),
    "diagnosis_classification": _table3(
        """
        magicflow           0.90 ± 0.01  0.81 ± 0.05  0.89 ± 0.04  0.81 ± 0.02  0.81 ± 0.05  0.80 ± 0.02
        resnet50            0.88 ± 0.03  0.79 ± 0.07  0.87 ± 0.04  0.76 ± 0.04  0.79 ± 0.07  0.77 ± 0.05
        densenet121         0.89 ± 0.02  0.80 ± 0.05  0.91 ± 0.01  0.79 ± 0.03  0.80 ± 0.05  0.79 ± 0.03
        inception_v3        0.87 ± 0.03  0.76 ± 0.06  0.88 ± 0.05  0.74 ± 0.04  0.76 ± 0.06  0.75 ± 0.04
        inception_resnet_v2 0.88 ± 0.01  0.72 ± 0.07  0.85 ± 0.05  0.76 ± 0.03  0.72 ± 0.07  0.73 ± 0.05
        vit_b32             0.90 ± 0.02  0.79 ± 0.04  0.92 ± 0.05  0.82 ± 0.05  0.79 ± 0.04  0.80 ± 0.03
        vit_r50_b16         0.90 ± 0.02  0.78 ± 0.10  0.90 ± 0.06  0.85 ± 0.07  0.78 ± 0.10  0.78 ± 0.07
        swin                0.90 ± 0.02  0.81 ± 0.05  0.91 ± 0.04  0.82 ± 0.07  0.81 ± 0.05  0.80 ± 0.03
        """
    ),
}

#: Tables 1-2 columns (FID_Rad and KID_Rad from Table 1, the rest from Table 2)
TABLES12_METRICS = ("fid_rad", "kid_rad", "precision", "recall", "density", "coverage", "ms_ssim_intra", "ms_ssim_inter")


def _tables12(text: str) -> dict[str, dict[str, float | None]]:
    rows = {}
    for line in text.strip().splitlines():
        name, *cells = line.split()
        rows[name] = {m: None if c == "-" else float(c) for m, c in zip(TABLES12_METRICS, cells)}
    return rows


#: Tables 1-2: task -> model -> metric (``real``: Table 2's "Real Data" reference, MS-SSIM only)
PAPER_TABLES12: dict[str, dict[str, dict[str, float | None]]] = {
    "scanner_generation": _tables12(
        """
        real       -      -        -    -    -    -    0.51 0.43
        magicflow  0.84   6.7e-4   0.87 0.64 0.91 0.84 0.60 0.49
        ddpm       13.80  1.75e-2  0.0  1.0  0.0  0.0  0.46 0.33
        cvae       16.69  2.07e-2  0.0  0.0  0.0  0.0  0.99 0.83
        glow       4.03   4.42e-3  0.02 0.13 0.0  0.01 0.34 0.30
        """
    ),
    "modality_generation": _tables12(
        """
        real       -      -        -    -    -    -    0.61 0.22
        magicflow  0.98   4.5e-4   0.94 0.64 1.0  0.87 0.64 0.22
        ddpm       15.22  1.72e-2  0.0  0.0  0.0  0.0  0.55 0.20
        cvae       14.71  1.47e-2  0.0  0.0  0.0  0.0  0.99 0.32
        glow       11.17  1.32e-2  0.26 0.05 0.05 0.01 0.26 0.20
        """
    ),
}

#: Table 5 (generative models on one A100, batch 8): model -> inference images/s, training
#: steps, training hours, GPU memory (GB), ms per training step. It names no task: it applies to
#: the paper's generation tasks.
PAPER_TABLE5: dict[str, dict[str, float]] = {
    "magicflow": {"images_per_s": 37.5, "steps": 74_000, "hours": 21.9, "gpu_gb": 28, "ms_per_step": 1056},
    "glow": {"images_per_s": 300, "steps": 94_000, "hours": 16.9, "gpu_gb": 23, "ms_per_step": 645},
    "cvae": {"images_per_s": 369, "steps": 38_000, "hours": 1.23, "gpu_gb": 6, "ms_per_step": 118},
    "ddpm": {"images_per_s": 0.24, "steps": 130_000, "hours": 68.1, "gpu_gb": 15, "ms_per_step": 1886},
}


def paper_table3(experiment: str, model: str) -> dict[str, list[float]] | None:
    """The paper's Table 3 row of this model ({metric: [mean, std]}), or None."""
    row = PAPER_TABLE3.get(experiment, {}).get(model)
    return {m: list(v) for m, v in row.items()} if row else None


def paper_tables12(experiment: str, model: str) -> dict[str, float | None] | None:
    """The paper's Tables 1-2 values of this model (``real`` for the reference row), or None."""
    row = PAPER_TABLES12.get(experiment, {}).get(model)
    return dict(row) if row else None


def paper_table5(experiment: str, model: str) -> dict[str, float] | None:
    """The paper's Table 5 row of this model where the experiment is one of the paper's generation tasks, or None."""
    return dict(PAPER_TABLE5[model]) if experiment in PAPER_TABLES12 and model in PAPER_TABLE5 else None
