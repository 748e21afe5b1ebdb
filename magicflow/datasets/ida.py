"""Downloads from the LONI Image and Data Archive (IDA), shared by the PPMI and ADNI adapters.

IDA unpacks a collection as ``<PROJECT>/<subject>/<series description>/<date>_<time>/<image id>/``
with DICOM files or NIfTI files inside, and exports the collection as a CSV with columns
Image Data ID, Subject, Group, Sex, Age, Visit, Modality, Description, Type, Acq Date, ...
Reading is two steps: :func:`convert_download` turns every image folder into one NIfTI +
sidecar (cached, its own Snakemake rule) and records the outcome in ``conversion.tsv``;
:func:`read_ida` then builds the manifest rows from that table, the collection CSV and IDA's
per-image XML metadata (the scanner of NIfTI downloads, which come without a sidecar). A
collection can hold a PET scan's raw series beside ADNI's processed steps of it; one of them
is used per scan, the raw series unless the setting says otherwise."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from xml.etree import ElementTree

import nibabel as nib
import pandas as pd

from magicflow.datasets.bids import scanner_name
from magicflow.datasets.clock import parse_date
from magicflow.datasets.dicom import CORRECTED_POSTFIXES, NIFTI, assemble_frames, convert_series, main_image
from magicflow.datasets.manifest import (
    check_root,
    MISSING,
    Exclusion,
    ImageRow,
    exclude_bad_subjects,
    drop_duplicate_images,
    exclusion_of,
    file_stem,
    format_age,
    subject_id,
)
from magicflow.datasets.tables import column, read_table
from magicflow.datasets.series import PROCESSING_LEVELS, classify, processing_step
from magicflow.datasets.tracers import tracer_family
from magicflow.errors import InputError
from magicflow.io import atomic_dir, atomic_path

COLLECTION_COLUMNS = ("Image Data ID", "Subject", "Group", "Sex", "Age", "Modality", "Description", "Acq Date")
OPTIONAL_COLUMNS = ("Type",)  # Original for the scanner's series, else a processed step of it
CONVERSION_COLUMNS = ["key", "image_id", "folder", "format", "status", "nifti", "sidecar", "reason"]
SET_ASIDE = "set aside"  # conversion.tsv status of an extra dcm2niix output of a folder's series
#: default of the ppmi/adni max_interpolated_slices setting (same default in the config schema):
#: a slice dcm2niix interpolates into a gap is invented data, so by default such a series goes
MAX_INTERPOLATED_SLICES = 0
EQ_REASON = "uncorrected for " + CORRECTED_POSTFIXES["Eq"]


@dataclass(frozen=True)
class ImageFolder:
    """One downloaded image: the folder IDA put it in, and what the path says about it."""

    subject: str  # as IDA spells it: 941_S_1202, 3000
    description: str
    date: str  # YYYYMMDD from the '<date>_<time>' folder, MISSING if unparsable
    image_id: str  # I<digits>
    path: Path
    key: str  # the relative path as one file-name-safe stem: unique per folder


def project_tree(root: Path, project: str) -> Path:
    """The folder holding the subject folders: ``root/<PROJECT>`` or ``root`` itself."""
    return root / project if (root / project).is_dir() else root


def image_folders(root: Path, project: str) -> list[ImageFolder]:
    tree = project_tree(root, project)
    folders = []
    for path in sorted(p for p in tree.glob("*/*/*/*") if p.is_dir()):
        subject, description, when, image = path.relative_to(tree).parts
        match = re.match(r"^(\d{4})-(\d{2})-(\d{2})", when)
        image_id = image if re.fullmatch(r"I\d+", image) else _image_id_from_files(path) or image
        folders.append(
            ImageFolder(
                subject=subject,
                description=description,
                date="".join(match.groups()) if match else MISSING,
                image_id=image_id,
                path=path,
                key=file_stem(*path.relative_to(tree).parts),
            )
        )
    return folders


def _image_id_from_files(folder: Path) -> str | None:
    """Older downloads name the last folder by series (S<digits>); the files still end in _I<digits>."""
    for name in sorted(p.name for p in folder.iterdir()):
        match = re.search(r"_(I\d+)\.(dcm|nii)", name)
        if match:
            return match.group(1)
    return None


# ---------------------------------------------------------------- conversion (cached)


def convert_download(root: str | Path, project: str, nifti_dir: str | Path) -> Path:
    """Give every image folder one NIfTI + sidecar and write ``nifti_dir/conversion.tsv``.

    DICOM folders are converted by dcm2niix into ``nifti_dir/<key>/``; NIfTI folders with one
    file are used where they lie; several 3D files (one per PET frame) are stacked into 4D,
    unless they are an MR image's (echoes, copies), of which the main one is used.
    Extra files dcm2niix writes for one MR series (other echoes, uncorrected copies, overlays)
    are listed with status 'set aside' and their reason, so the manifest lists them as excluded.
    A folder already converted in an earlier run is reused, never converted again."""
    root, nifti_dir = Path(root), Path(nifti_dir)
    check_root(root, f"{project} root")
    records = []
    for folder in image_folders(root, project):
        record = {
            "key": folder.key,
            "image_id": folder.image_id,
            "folder": str(folder.path),
            "format": MISSING,
            "status": "ok",
            "nifti": MISSING,
            "sidecar": MISSING,
            "reason": "",
        }
        files = sorted(
            p for p in folder.path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".xml"
        )
        niftis = [p for p in files if NIFTI.search(p.name)]
        record["format"] = "nifti" if niftis else "dicom"
        set_aside: list[tuple[Path, Path | str, str]] = []
        try:
            if not files:
                raise InputError("empty image folder")
            if len(niftis) == 1:
                image, sidecar = niftis[0], _own_sidecar(niftis[0])
            elif niftis and _is_mr(niftis):  # echoes or copies of one MR image, used where they lie: never frames
                image, others = main_image(niftis)
                sidecar = _own_sidecar(image)
                set_aside = [(p, _own_sidecar(p) or MISSING, f"{why}; kept {image.name}") for p, why in others]
            else:
                image, sidecar, set_aside = _cached(folder, nifti_dir / folder.key, niftis)
            record.update(nifti=str(image), sidecar=str(sidecar) if sidecar else MISSING)
        except InputError as error:
            record.update(status="failed", reason=str(error))
        records.append(record)
        records += [{**record, "status": SET_ASIDE, "nifti": str(i), "sidecar": str(j), "reason": why} for i, j, why in set_aside]
    table = pd.DataFrame(records, columns=CONVERSION_COLUMNS)
    out = nifti_dir / "conversion.tsv"
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return out


def _own_sidecar(image: Path) -> Path | None:
    own = image.with_name(NIFTI.sub(".json", image.name))
    return own if own.exists() else None


def _is_mr(niftis: list[Path]) -> bool:
    """An MR image by its sidecars' Modality, else by IDA's NIfTI file name
    (``ADNI_941_S_1202_MR_<description>_..._I<image>.nii``; PET files say ``_PT_``)."""
    modalities = set()
    for sidecar in filter(None, map(_own_sidecar, niftis)):
        try:
            modalities.add(json.loads(sidecar.read_text()).get("Modality"))
        except (OSError, json.JSONDecodeError, AttributeError):  # unreadable: the file name decides
            continue
    return modalities == {"MR"} if modalities else all("_MR_" in p.name for p in niftis)


def _cached(folder: ImageFolder, out: Path, niftis: list[Path]) -> tuple[Path, Path, list[tuple[Path, Path, str]]]:
    """The folder's converted image, sidecar and set-aside files; converted only the first time
    (the set-aside list is kept in ``set_aside.json`` so a reused conversion reports it too)."""
    image, sidecar, listing = out / f"{folder.image_id}.nii.gz", out / f"{folder.image_id}.json", out / "set_aside.json"
    if not (image.exists() and sidecar.exists()):  # written atomically: present means complete
        with atomic_dir(out) as tmp:
            if niftis:
                assemble_frames(niftis, tmp / image.name, tmp / sidecar.name)
                others: list[tuple[Path, Path, str]] = []
            else:
                _, _, others = convert_series(folder.path, tmp, folder.image_id)
            (tmp / listing.name).write_text(json.dumps([[i.name, j.name, why] for i, j, why in others], indent=1) + "\n")
    entries = json.loads(listing.read_text()) if listing.exists() else []
    return image, sidecar, [(out / i, out / j, why) for i, j, why in entries]


def read_conversions(nifti_dir: Path) -> tuple[dict[str, dict[str, str]], dict[str, list[dict[str, str]]]]:
    """conversion.tsv as the record of each image folder by key, and the files set aside from
    each folder's conversion by key."""
    path = nifti_dir / "conversion.tsv"
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist: convert the download first (magicflow manifest --convert-only)")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    folders: dict[str, dict[str, str]] = {}
    set_aside: dict[str, list[dict[str, str]]] = {}
    for record in table.to_dict("records"):
        if record["status"] == SET_ASIDE:
            set_aside.setdefault(record["key"], []).append(record)
        else:
            folders[record["key"]] = record
    return folders, set_aside


# ---------------------------------------------------------------- collection CSV


def image_data_id(value: str) -> str:
    """'I123456', '123456' and '123456.0' (spreadsheet round trips) are one image ID."""
    digits = re.sub(r"\.0$", "", value.strip()).lstrip("Ii")
    return f"I{digits}" if digits.isdigit() else value.strip()


def read_collection(path: str | Path) -> dict[str, dict[str, str]]:
    """Collection CSV rows by image ID, with the columns the adapters use under their IDA names."""
    table = read_table(path, "IDA collection CSV")
    names = {c: column(table, c, path, "IDA collection CSV") for c in COLLECTION_COLUMNS}
    out: dict[str, dict[str, str]] = {}
    for record in table.to_dict("records"):
        row = {c: record[names[c]] for c in COLLECTION_COLUMNS}
        row.update({c: record.get(c, "") for c in OPTIONAL_COLUMNS})
        image = image_data_id(row["Image Data ID"])
        if image in out and out[image] != row:
            raise InputError(f"IDA collection CSV {str(path)!r}: image ID {image} listed twice with different values")
        out[image] = row
    return out


# ---------------------------------------------------------------- IDA per-image XML metadata

#: dcm2niix's manufacturer names, chosen by the first two letters of the DICOM Manufacturer as
#: dcm2niix does (nii_dicom.cpp dcmStrManufacturer), so header and XML scanners agree
MANUFACTURERS = {
    "SI": "Siemens",
    "CP": "Siemens",
    "GE": "GE",
    "PH": "Philips",
    "TO": "Toshiba",
    "CA": "Canon",
    "HI": "Hitachi",
    "ME": "Mediso",
    "UI": "UIH",
    "BR": "Bruker",
    "MR": "MRSolutions",
    "HY": "Hyperfine",
}


def metadata_files(root: Path, folders: list[ImageFolder]) -> dict[str, Path]:
    """IDA's per-image XML files (``<PROJECT>_<subject>_<description>_S<series>_I<image>.xml``) by
    image ID: beside the project folder, one folder down (the project folder, a metadata
    folder), two down, or in the image folder itself. Not deeper: downloads hold millions of files."""
    paths = [p for pattern in ("*.xml", "*/*.xml", "*/*/*.xml") for p in sorted(root.glob(pattern))]
    paths += [p for folder in folders for p in sorted(folder.path.glob("*.xml"))]
    found: dict[str, Path] = {}
    for path in paths:
        match = re.search(r"_(I\d+)\.xml$", path.name, re.IGNORECASE)
        if match:
            found.setdefault(image_data_id(match.group(1)), path)
    return found


def read_metadata_xml(path: Path) -> dict[str, object]:
    """What an IDA image XML says about the scan, under dcm2niix's sidecar names (Manufacturer,
    ManufacturersModelName, Radiopharmaceutical) plus the image's and its original's
    descriptions. Original images carry ``imagingProtocol/protocolTerm``; processed ones the
    original's under ``seriesLevelMeta/relatedImageDetail/originalRelatedImage``."""
    try:
        tree = ElementTree.parse(path)
    except (ElementTree.ParseError, OSError) as error:
        raise InputError(f"unreadable IDA metadata XML {path}: {error}") from None
    terms: dict[str, str] = {}
    for protocol in tree.getroot().iter("protocol"):
        terms.setdefault(protocol.get("term", ""), (protocol.text or "").strip())
    meta: dict[str, object] = {}
    manufacturer = terms.get("Manufacturer", "")
    if manufacturer:
        meta["Manufacturer"] = MANUFACTURERS.get(manufacturer[:2].upper(), manufacturer)
    if terms.get("Mfg Model"):
        meta["ManufacturersModelName"] = terms["Mfg Model"]
    if terms.get("Radiopharmaceutical"):
        meta["Radiopharmaceutical"] = terms["Radiopharmaceutical"]
    texts = [
        e.text.strip()
        for tag in ("processedDataLabel", "description")
        for e in tree.getroot().iter(tag)
        if e.text and e.text.strip()
    ]
    meta["descriptions"] = list(dict.fromkeys(texts))
    return meta


# ---------------------------------------------------------------- manifest rows

#: (subject as in the download, collection row, scan date) -> (diagnosis, "") or (None, reason)
Diagnose = Callable[[str, dict[str, str], date | None], tuple[str | None, str]]


@dataclass(frozen=True)
class SeriesFilter:
    """Per-dataset regular expressions on MRI series descriptions (unset: no filter)."""

    include: re.Pattern | None = None
    exclude: re.Pattern | None = None

    @classmethod
    def of(cls, include: str | None, exclude: str | None) -> SeriesFilter:
        def compiled(pattern: str | None, setting: str) -> re.Pattern | None:
            if not pattern:
                return None
            try:
                return re.compile(pattern)
            except re.error as error:
                raise InputError(f"{setting} {pattern!r} is not a regular expression: {error}") from None

        return cls(compiled(include, "mri_series_include"), compiled(exclude, "mri_series_exclude"))

    def problem(self, texts: list[str]) -> str:
        if self.exclude is not None:
            hit = next((t for t in texts if self.exclude.search(t)), None)
            if hit is not None:
                return f"series {hit!r} matches mri_series_exclude {self.exclude.pattern!r}"
        if self.include is not None and not any(self.include.search(t) for t in texts):
            return f"series {' / '.join(texts)!r} does not match mri_series_include {self.include.pattern!r}"
        return ""


@dataclass(frozen=True)
class Candidate:
    """A usable image before one image per scan is chosen: its row and ADNI processing step."""

    row: ImageRow
    image_id: str
    step: str
    description: str


def read_ida(
    root: str | Path,
    dataset: str,
    project: str,
    collection: str | Path,
    nifti_dir: str | Path,
    diagnose: Diagnose,
    processing_level: str = "raw",
    series_filter: SeriesFilter = SeriesFilter(),
    max_interpolated_slices: int = MAX_INTERPOLATED_SLICES,
) -> tuple[list[ImageRow], list[Exclusion]]:
    """Manifest rows (references not yet assigned) and exclusions for an IDA download, after
    :func:`convert_download`.
    ``processing_level`` picks, of each PET scan's raw series and processed steps, the one used;
    a series whose missing slices dcm2niix filled by interpolation is kept only while it filled
    no more than ``max_interpolated_slices``."""
    root = Path(root)
    check_root(root, f"dataset {dataset!r}: {project} root")
    if processing_level not in PROCESSING_LEVELS:
        raise InputError(f"dataset {dataset!r}: processing_level {processing_level!r} is not one of {list(PROCESSING_LEVELS)}")
    folders = image_folders(root, project)
    if not folders:
        raise InputError(f"dataset {dataset!r}: no {project}/<subject>/<description>/<date>/<image id>/ folders under {root}")
    meta = read_collection(collection if Path(collection).is_absolute() else root / collection)
    conversions, set_aside = read_conversions(Path(nifti_dir))
    xmls = metadata_files(root, folders)

    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for folder in folders:
        subject = subject_id(folder.subject)
        excluded += [Exclusion(dataset, subject, folder.date, r["nifti"], r["reason"]) for r in set_aside.get(folder.key, [])]
        found = _candidate(
            folder,
            subject,
            dataset,
            meta.get(folder.image_id),
            conversions.get(folder.key),
            xmls.get(folder.image_id),
            diagnose,
            series_filter,
        )
        if isinstance(found, str):
            excluded.append(Exclusion(dataset, subject, folder.date, str(folder.path), found))
        elif reason := interpolation_problem(found.row.path, set_aside.get(folder.key, []), max_interpolated_slices):
            excluded.append(Exclusion(dataset, subject, folder.date, found.row.path, reason))
        else:
            candidates.append(found)
    rows, not_chosen = one_image_per_scan(candidates, processing_level)
    rows, duplicates = drop_duplicate_images(rows)
    rows, bad_labels = exclude_bad_subjects(rows)
    return rows, excluded + not_chosen + duplicates + bad_labels


def interpolated_slices(kept: str | Path, twin: str | Path) -> int:
    """How many slices dcm2niix's equal-spacing copy (``_Eq``) adds to the series it was made
    from: the slices it interpolated into gaps. Headers only."""
    import nibabel as nib

    return sum(nib.load(kept).shape[:3]) - sum(nib.load(twin).shape[:3])


def interpolation_problem(image: str | Path, set_aside: list[dict[str, str]], limit: int) -> str:
    """Why a converted image is excluded for slices dcm2niix filled by interpolation ('' when it
    is not): its uncorrected twin was set aside for unequal slice spacing and the corrected copy
    has more than ``limit`` slices more."""
    twin = next((r["nifti"] for r in set_aside if r["reason"].startswith(EQ_REASON)), None)
    if twin is None:
        return ""
    try:
        filled = interpolated_slices(image, twin)
    except Exception as error:  # nibabel raises several types for broken headers
        return f"slices missing from the series (dcm2niix interpolated them) and their number unknown ({error})"
    if filled <= limit:
        return ""
    return (
        f"{filled} slice(s) missing from the series: dcm2niix filled the gap by interpolation (its _Eq copy), "
        f"more than max_interpolated_slices ({limit}); download the series again or raise the setting"
    )


def one_image_per_scan(candidates: list[Candidate], level: str) -> tuple[list[ImageRow], list[Exclusion]]:
    """Of each PET scan (subject, date, tracer family) the image at ``level`` is kept, the highest image
    ID if several (the latest upload, as Clinica's adni-to-bids does), and the others are
    excluded naming it; a scan with no image at ``level`` is excluded whole, with what it has.
    MRI passes as it is (processed MRI never gets here)."""
    rows = [c.row for c in candidates if c.row.modality != "pet"]
    excluded: list[Exclusion] = []
    scans: dict[tuple[str, str, str], list[Candidate]] = {}
    for c in candidates:
        if c.row.modality == "pet":
            # by tracer family, so one tracer spelled two ways (FDG, FLUORODEOXYGLUCOSE) is one scan
            scans.setdefault((c.row.subject, c.row.session, c.row.tracer), []).append(c)
    for scan in scans.values():
        chosen = [c for c in scan if c.step == level]
        if not chosen:
            has = ", ".join(f"{c.image_id} {c.step}" for c in scan)
            excluded += [
                exclusion_of(c.row, f"no {level} image of this PET scan (processing_level {level}); the download has {has}")
                for c in scan
            ]
            continue
        kept = max(chosen, key=lambda c: int(c.image_id[1:]) if c.image_id[1:].isdigit() else -1)
        rows.append(kept.row)
        for c in scan:
            if c is kept:
                continue
            what = (
                f"another {level} image of the same PET scan"
                if c.step == level
                else f"ADNI processing step {c.step} ({c.description!r}), not processing_level {level}"
            )
            excluded.append(
                exclusion_of(c.row, f"{what}: one image per subject, date and tracer, kept {kept.image_id} ({kept.row.path})")
            )
    return rows, excluded


def _candidate(
    folder: ImageFolder,
    subject: str,
    dataset: str,
    record: dict[str, str] | None,
    conversion: dict[str, str] | None,
    xml: Path | None,
    diagnose: Diagnose,
    series_filter: SeriesFilter,
) -> Candidate | str:
    if record is None:
        return f"image ID {folder.image_id} is not in the collection CSV"
    if conversion is None:
        return "not converted yet: conversion.tsv predates this folder (rerun the conversion)"
    if conversion["status"] != "ok":
        return conversion["reason"]
    if subject_id(record["Subject"]) != subject:
        return f"collection CSV gives subject {record['Subject']!r} for {folder.image_id}, the folder says {folder.subject!r}"
    sidecar: dict = {}
    if conversion["sidecar"] != MISSING:
        try:
            sidecar = json.loads(Path(conversion["sidecar"]).read_text())
        except (OSError, json.JSONDecodeError) as error:
            return f"unreadable sidecar {conversion['sidecar']}: {error}"
    xml_meta: dict = {}
    if xml is not None:
        try:
            xml_meta = read_metadata_xml(xml)
        except InputError as error:
            return str(error)
    texts = [record["Description"], folder.description.replace("_", " "), str(sidecar.get("SeriesDescription", ""))]
    texts = list(dict.fromkeys(t for t in texts + xml_meta.pop("descriptions", []) if t))
    step = processing_step(record["Description"] or folder.description.replace("_", " "), record.get("Type", ""))
    header = {**xml_meta, **sidecar}  # the sidecar wins; the XML fills in what it lacks (NIfTI downloads)
    is_mri = record["Modality"].strip().upper() in ("MRI", "MR") and str(header.get("Modality", "MR")).upper() == "MR"
    if is_mri:
        if step != "raw":
            return f"processed MRI ({record['Description'] or folder.description!r}): the pipeline registers the original series itself"
        problem = series_filter.problem(texts)
        if problem:
            return problem
    kind = classify(texts, header, record["Modality"], step)
    if isinstance(kind, str):
        return kind
    modality, tracer_name = kind
    try:
        shape = nib.load(conversion["nifti"]).shape
    except Exception as error:  # nibabel raises several types for broken headers
        return f"unreadable NIfTI header: {error}"
    if modality != "pet" and len(shape) == 4 and shape[3] > 1:
        return f"{modality} is 4D with {shape[3]} volumes (expected one 3D volume)"
    scan_date = parse_date(record["Acq Date"]) or parse_date(folder.date)
    diagnosis, reason = diagnose(folder.subject, record, scan_date)
    if diagnosis is None:
        return reason
    session = scan_date.strftime("%Y%m%d") if scan_date else MISSING
    suffix = "pet" if modality == "pet" else modality
    row = ImageRow(
        dataset=dataset,
        subject=subject,
        session=session,
        image=file_stem(
            f"sub-{subject}",
            f"ses-{session}" if scan_date else "",
            f"trc-{tracer_name}" if modality == "pet" else "",
            f"img-{folder.image_id}",
            suffix,
        ),
        modality=modality,
        tracer=tracer_family(tracer_name) if modality == "pet" else MISSING,
        tracer_name=tracer_name,
        scanner=scanner_name(header),
        diagnosis=diagnosis,
        age=format_age(record["Age"]),
        sex=record["Sex"] or MISSING,
        reference=MISSING,
        path=conversion["nifti"],
        sidecar=conversion["sidecar"],
    )
    return Candidate(row, folder.image_id, step, record["Description"] or folder.description)
