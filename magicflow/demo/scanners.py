"""Acquisition profiles of the demo's simulated scanners and PET tracers.

MRI scanners differ in noise level and kind (the 1.5 T ones about twice as noisy as the 3 T
ones), contrast curve (grey/white-matter weighting, as vendors' T1w sequences differ), bias-field
strength, blur, voxel size and stored orientation. After registration to MNI the orientation,
voxel size and (after N4) the bias field are gone; only the image character is left, which is
what scanner classification has to learn. The contrast curves are spread wider than real
scanners' (gamma 0.7-1.4): with gamma 0.92-1.08 the demo's few CPU minutes of training left
scanner classification at or near chance (balanced accuracy 0.25-0.42 for 4 scanners)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MRIScanner:
    manufacturer: str
    model: str
    field_strength: float
    voxel_mm: tuple[float, float, float]  # T1w voxel size; T2w/FLAIR use thicker slices
    orientation: str  # "RAS" or "LAS": sign of the stored x axis
    noise: str  # "rician" (magnitude images) or "gaussian"
    noise_sigma: float  # relative to white-matter intensity
    gamma: float  # contrast curve: intensity ** gamma
    bias_strength: float  # amplitude of the log bias field
    blur_mm: float  # Gaussian sigma of the point-spread blur

    @property
    def name(self) -> str:
        return f"{self.manufacturer} {self.model}"


MRI_SCANNERS: tuple[MRIScanner, ...] = (
    MRIScanner("Siemens", "TrioTim", 3.0, (1.0, 1.0, 1.2), "RAS", "rician", 0.022, 0.90, 0.20, 0.0),
    MRIScanner("Philips", "Gyroscan Intera", 1.5, (1.2, 1.2, 1.2), "LAS", "gaussian", 0.050, 0.70, 0.30, 0.5),
    MRIScanner("GE", "Signa HDxt", 1.5, (1.1, 1.1, 1.3), "LAS", "rician", 0.045, 1.40, 0.12, 0.3),
    MRIScanner("Siemens", "Prisma", 3.0, (1.0, 1.2, 1.2), "RAS", "rician", 0.015, 1.15, 0.25, 0.7),
)

#: slice thickness (mm) of the T2w and FLAIR series, in-plane size taken from the scanner
THICK_SLICE_MM = {"T2w": 2.4, "FLAIR": 3.0}


@dataclass(frozen=True)
class PETScanner:
    manufacturer: str
    model: str
    voxel_mm: tuple[float, float, float]
    fwhm_mm: float  # reconstructed resolution

    @property
    def name(self) -> str:
        return f"{self.manufacturer} {self.model}"


PET_SCANNERS: tuple[PETScanner, ...] = (
    PETScanner("Siemens", "Biograph mCT", (2.5, 2.5, 2.5), 6.0),
    PETScanner("GE", "Discovery 710", (2.4, 2.4, 2.8), 7.0),
    PETScanner("Philips", "Ingenuity TF", (2.6, 2.6, 2.6), 8.0),
)


@dataclass(frozen=True)
class Tracer:
    name: str  # BIDS trc- label and TracerName
    family: str  # fdg | amyloid | tau
    start_min: float  # start of the acquisition after injection (the tracer's usual plateau window)
    frames: int
    frame_min: float

    @property
    def frame_starts_s(self) -> list[float]:
        return [60.0 * (self.start_min + i * self.frame_min) for i in range(self.frames)]

    @property
    def frame_durations_s(self) -> list[float]:
        return [60.0 * self.frame_min] * self.frames


#: ADNI-style static protocols: FDG 30-60 min, florbetapir 50-70 min, flortaucipir 75-105 min
TRACERS: dict[str, Tracer] = {
    "FDG": Tracer("FDG", "fdg", 30.0, 6, 5.0),
    "AV45": Tracer("AV45", "amyloid", 50.0, 4, 5.0),
    "AV1451": Tracer("AV1451", "tau", 75.0, 6, 5.0),
}
