"""Which series is which: the modality and tracer of an IDA image from its descriptions and
headers, and the ADNI processing step it is. Kept apart from the download reading in
:mod:`magicflow.datasets.ida` because these rules are what a neuroimager checks and edits."""

from __future__ import annotations

import re

from magicflow.datasets.manifest import MISSING
from magicflow.datasets.tracers import normalise_tracer, tracer_family

#: series description -> modality; checked in this order (a 'T2 FLAIR' is FLAIR, a 'T2 STAR' is T2*)
NOT_STRUCTURAL = re.compile(
    r"(?i)(localizer|scout|calibration|field.?map|T2.?STAR|T2\*|\bSWI\b|DTI|DWI|fMRI|BOLD|\bASL\b|PERFUSION|HighResHippo)"
)
MRI_MODALITIES = (
    ("FLAIR", re.compile(r"(?i)FLAIR")),
    ("T2w", re.compile(r"(?i)(T2|TSE|SPACE)")),
    ("T1w", re.compile(r"(?i)(MP-?RAGE|MP_RAGE|IR-?F?SPGR|T1)")),
)


# ---------------------------------------------------------------- ADNI processing steps

#: ADNI PET core's processing steps as IDA names them in the description (the strings Clinica's
#: adni_to_bids selects on), the most processed first; FDG's lack the tracer name, the others'
#: start with it ('AV45 Co-registered, Averaged')
PROCESSING_STEPS = {
    "uniform_6mm": re.compile(r"(?i)uniform\s*6\s*mm"),
    "uniform_resolution": re.compile(r"(?i)uniform\s+resolution"),
    "standardized": re.compile(r"(?i)std\.?\s+img\.?\s+and\s+vox\.?\s+siz|standardi[sz]ed\s+image\s+and\s+voxel\s+size"),
    "coregistered_averaged": re.compile(r"(?i)co-?reg(istered)?\b,?\s+av(era)?g"),
    "coregistered_dynamic": re.compile(r"(?i)co-?reg(istered)?\b,?\s+dynamic"),
}
#: values of the processing_level setting, least processed first
PROCESSING_LEVELS = ("raw", *reversed(PROCESSING_STEPS))


def processing_step(description: str, image_type: str) -> str:
    """The ADNI processing step of an image, from its description; 'raw' for the scanner's series
    (collection Type 'Original', or no Type column), 'processed' for any other processed image."""
    for step, pattern in PROCESSING_STEPS.items():
        if pattern.search(description):
            return step
    return "raw" if image_type.strip().lower() in ("", "original") else "processed"


# ---------------------------------------------------------------- modality and tracer


def tracer_in(text: str) -> str | None:
    """A known tracer named in free text ('ADNI3-AV-1451 6x5min', 'FBB Brain', 'MK-6240'): each
    word and each pair of adjacent words is looked up."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    for i, word in enumerate(words):
        for candidate in (word + words[i + 1] if i + 1 < len(words) else None, word):
            if candidate and tracer_family(candidate):
                return normalise_tracer(candidate)
    return None


def _word(pattern: str) -> str:
    """``pattern`` as a whole word, '_' and '-' counting as separators (T1_SE, PD-T2)."""
    return rf"(?<![A-Za-z0-9])(?:{pattern})(?![A-Za-z0-9])"


#: descriptions of series that are named T1/T2 yet are not the T1w/T2w the pipeline registers
NOT_T1W_T2W = (
    (
        re.compile(r"(?i)" + _word(r"PD|DE|PDT2|T2PD|dual[-_ ]?echo|proton[-_ ]?density")),
        "a proton-density or PD/T2 dual-echo image",
    ),
    (
        re.compile(r"(?i)T1W?[-_ ]*" + _word(r"SE|TSE|FSE|spin[-_ ]?echo") + "|" + _word(r"SE|TSE|FSE") + r"[-_ ]*T1"),
        "a T1 spin echo, not a 3D T1 gradient echo (MPRAGE, IR-SPGR)",
    ),
    (
        re.compile(
            r"(?i)T2\*?[-_ ]*" + _word(r"GRE|FFE|FLASH|MERGE|gradient[-_ ]?echo") + "|" + _word(r"GRE|FFE|FLASH") + r"[-_ ]*T2"
        ),
        "a T2* gradient echo, not a T2w spin echo",
    ),
)


def sequence_problem(modality: str, sidecar: dict) -> str:
    """Why a series named T1w/T2w is not one by its header ('' when it is): one echo of a
    multi-echo series (dcm2niix writes EchoNumber only for those), a T1 spin echo, a T2*
    gradient echo (ScanningSequence, else the Siemens SequenceName '*se2d1', '*fl2d1')."""
    if modality not in ("T1w", "T2w"):
        return ""
    if sidecar.get("EchoNumber") not in (None, ""):
        return f"echo {sidecar['EchoNumber']} of a multi-echo series (a PD/T2 dual echo or multi-echo image), not a single-echo {modality}"
    tokens = set(re.split(r"[^A-Z]+", str(sidecar.get("ScanningSequence", "")).upper())) - {""}
    if not tokens:
        name = str(sidecar.get("SequenceName", "")).lower().lstrip("*")
        tokens = {"SE"} if re.match(r"se\d", name) else {"GR"} if re.match(r"(fl|me|gre)\d", name) else set()
    if modality == "T1w" and "SE" in tokens and not tokens & {"GR", "IR"}:
        return f"a T1 spin echo (ScanningSequence {sidecar.get('ScanningSequence') or sidecar.get('SequenceName')}), not a 3D T1 gradient echo"
    if modality == "T2w" and "GR" in tokens and not tokens & {"SE", "IR"}:
        return f"a T2* gradient echo (ScanningSequence {sidecar.get('ScanningSequence') or sidecar.get('SequenceName')}), not a T2w spin echo"
    return ""


def classify(texts: list[str], sidecar: dict, collection_modality: str, step: str = "raw") -> tuple[str, str] | str:
    """(modality, tracer name) from the series descriptions and headers, or the reason the
    image is not used. PET when the collection or the header (Modality PT) says so; a
    processed ADNI step naming no tracer is FDG (the PET core names every other tracer)."""
    header_modality = str(sidecar.get("Modality", "")).upper()
    kind = collection_modality.strip().upper()
    if kind == "PET" and header_modality == "MR":
        return (
            "the collection CSV says PET but the image header says MR (DICOM Modality): the CSV row is wrong "
            "for this series; correct its Modality to MRI"
        )
    if kind == "PET" or header_modality == "PT":
        for text in texts + [str(sidecar.get("TracerName", "")), str(sidecar.get("Radiopharmaceutical", ""))]:
            tracer = tracer_in(text)
            if tracer:
                return "pet", tracer
        if step in PROCESSING_STEPS:
            return "pet", "FDG"
        return f"PET tracer not recognised in {' / '.join(t for t in texts if t)!r} or the header"
    if kind not in ("MRI", "MR", "") and header_modality not in ("MR",):
        return f"modality {collection_modality} is not used by the pipeline (MRI, PET)"
    for text in texts:
        if NOT_STRUCTURAL.search(text):
            return f"series {text!r} is not a T1, T2 or FLAIR structural image"
    for text in texts:
        for modality, pattern in MRI_MODALITIES:
            if pattern.search(text):
                if modality != "FLAIR":
                    for other, what in NOT_T1W_T2W:
                        if any(other.search(t) for t in texts):
                            return f"series {text!r} is {what}"
                problem = sequence_problem(modality, sidecar)
                return f"series {text!r} is {problem}" if problem else (modality, MISSING)
    return f"series {' / '.join(t for t in texts if t)!r} is not recognised as T1, T2 or FLAIR"
