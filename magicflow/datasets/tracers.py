"""PET tracer names as they appear in BIDS labels, sidecars, DICOM headers and series
descriptions: the one parser every adapter and the PET preprocessing use.

A name resolves to one canonical tracer (``FLORBETAPIR``) and its family (``amyloid``). Codes,
brand names and isotope-marked spellings are one tracer: 'AV45', 'Amyvid', 'florbetapir',
'18FAV45' (Clinica's ``trc-`` label), '[18F]AV-45' and 'Florbetapir F^18^' (a DICOM
Radiopharmaceutical) all give FLORBETAPIR."""

from __future__ import annotations

import re

#: canonical tracer -> (family, other spellings as normalise_tracer writes them)
TRACERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "FDG": ("fdg", ("FLUORODEOXYGLUCOSE", "FLUDEOXYGLUCOSE")),
    "FLORBETAPIR": ("amyloid", ("AV45", "FBP", "AMYVID")),
    "FLORBETABEN": ("amyloid", ("FBB", "AV1", "BAY949172", "NEURACEQ")),
    "NAV4694": ("amyloid", ("NAV", "AZD4694", "FLUTAFURANOL")),
    "PIB": ("amyloid", ("PITTSBURGHCOMPOUNDB",)),
    "FLUTEMETAMOL": ("amyloid", ("FMM", "GE067", "VIZAMYL")),
    "FLORTAUCIPIR": ("tau", ("AV1451", "T807", "TAUVID")),
    "MK6240": ("tau", ("FLORQUINITAU",)),
    "PI2620": ("tau", ()),
    "RO948": ("tau", ()),
    "PMPBB3": ("tau", ("APN1607", "FLORZOLOTAU")),
}
ALIASES: dict[str, str] = {alias: name for name, (_, aliases) in TRACERS.items() for alias in (name, *aliases)}
#: the isotope written before ('18F', 'F-18', '[11C]') or after ('F^18^') the compound
ISOTOPE = re.compile(r"^(18F|F18|11C|C11)(?=[A-Z])|(?<=[A-Z0-9])(18F|F18|11C|C11)$")


def normalise_tracer(name: str) -> str:
    """Upper-case with separators and the isotope removed: 'AV-1451', 'av1451', 'AV 1451',
    '[18F]AV-1451' and '18FAV1451' are one tracer."""
    key = re.sub(r"[^A-Z0-9]", "", name.upper())
    return ISOTOPE.sub("", key) or key


def canonical_tracer(name: str) -> str | None:
    """The tracer's canonical name (AV45 -> FLORBETAPIR), None when the name is not a known tracer."""
    return ALIASES.get(normalise_tracer(name))


def tracer_family(name: str) -> str | None:
    """fdg | amyloid | tau for a known tracer name, else None."""
    canonical = canonical_tracer(name)
    return TRACERS[canonical][0] if canonical else None
