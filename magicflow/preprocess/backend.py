"""Backend choice (auto|fsl|ants) and the thread count that both toolkits really honour."""

from __future__ import annotations

import os
import shutil

from magicflow.errors import InputError

BACKENDS = ("auto", "fsl", "ants")
#: secondary images that --bias-correct reaches. PET is never bias-corrected: its intensity
#: variations are the uptake being measured, not a receive-coil field
BIAS_CORRECTED = ("T2w", "FLAIR")


def fsl_available() -> bool:
    """True when FSL is usable: ``$FSLDIR`` set and ``flirt`` on PATH."""
    return bool(os.environ.get("FSLDIR")) and shutil.which("flirt") is not None


def resolve_backend(name: str) -> str:
    """``auto`` is FSL when installed (the paper's pipeline), else ANTs; ``fsl`` without FSL is an error."""
    if name not in BACKENDS:
        raise InputError(f"backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "fsl" if fsl_available() else "ants"
    if name == "fsl" and not fsl_available():
        raise InputError("backend 'fsl': FSL not found ($FSLDIR unset or `flirt` not on PATH); use 'ants' or 'auto'")
    return name


def bias_correction_applies(modality: str, requested: bool) -> bool:
    """Whether a requested bias correction (N4 or FAST) runs on this secondary modality."""
    return requested and modality in BIAS_CORRECTED


def thread_environment(threads: int) -> dict[str, str]:
    """Variables that bound the threads of ITK/ANTs (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS) and of
    FSL's OpenMP builds and BLAS (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS)."""
    if threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")
    n = str(threads)
    return {
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": n,
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
    }


def set_threads(threads: int) -> None:
    """Export the thread variables for this process and its children (FSL tools, ANTs in-process).

    ITK reads its variable when a filter is created, so this must run before the registration."""
    os.environ.update(thread_environment(threads))
