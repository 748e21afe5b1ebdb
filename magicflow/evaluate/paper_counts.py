"""Slice counts per class in the paper's Table 4 (Appendix B.2), for the report's data section.

Keyed by the names the shipped config gives the paper's four tasks and by the class names
those experiments use (manifest values), so a user's counts sit next to the authors'. The
paper's "Gyrosan Intera" is the Philips Gyroscan Intera; "Unspecified (IOP)" is IXI's GE
scanner; ADNI3 and ADNI4 are one dataset (``adni``) here."""

from __future__ import annotations

#: experiment name -> class -> number of coronal slices in the paper
PAPER_SLICE_COUNTS: dict[str, dict[str, int]] = {
    "scanner_generation": {
        "ixi Philips Gyroscan Intera 1.5T": 349,
        "ixi GE 1.5T": 310,
        "ppmi Siemens TrioTim": 315,
        "sald Siemens TrioTim": 345,
    },
    "scanner_classification": {
        "ixi Philips Gyroscan Intera 1.5T": 322,
        "ixi Philips Intera 3T": 185,
        "ixi GE 1.5T": 74,
        "ppmi Siemens TrioTim": 41,
        "sald Siemens TrioTim": 494,
        "adni Siemens Prisma": 69,
        "adni Siemens Prisma fit": 167,
    },
    "modality_generation": {
        "FLAIR": 526,
        "T1w": 527,
        "T2w": 535,
        "pet-amyloid": 516,
        "pet-tau": 518,
        "pet-fdg": 522,
    },
    "diagnosis_classification": {"AD": 530, "CN": 631},
}


def paper_counts(experiment: str) -> dict[str, int] | None:
    """The paper's slice counts for this experiment's classes, or None if it is not one of the paper's tasks."""
    return PAPER_SLICE_COUNTS.get(experiment)
