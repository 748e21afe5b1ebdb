"""PET tracer names as they appear in BIDS labels, sidecars and series descriptions, mapped to
the tracer family the pipeline's experiments use."""

from __future__ import annotations

import re

TRACER_FAMILIES: dict[str, str] = {
    "FDG": "fdg", "FLUORODEOXYGLUCOSE": "fdg",
    "AV45": "amyloid", "FLORBETAPIR": "amyloid", "FBP": "amyloid",
    "FBB": "amyloid", "FLORBETABEN": "amyloid", "AV1": "amyloid",
    "NAV4694": "amyloid", "NAV": "amyloid", "FLUTAFURANOL": "amyloid",
    "PIB": "amyloid", "FLUTEMETAMOL": "amyloid", "FMM": "amyloid",
    "AV1451": "tau", "FLORTAUCIPIR": "tau", "T807": "tau",
    "MK6240": "tau", "FLORQUINITAU": "tau",
    "PI2620": "tau", "RO948": "tau", "PMPBB3": "tau", "APN1607": "tau",
}


def normalise_tracer(name: str) -> str:
    """Upper-case with separators removed: 'AV-1451', 'av1451' and 'AV 1451' are one tracer."""
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def tracer_family(name: str) -> str | None:
    """fdg | amyloid | tau for a known tracer name, else None."""
    return TRACER_FAMILIES.get(normalise_tracer(name))
