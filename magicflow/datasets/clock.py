"""Dates of tables, folders and sessions; clock times of PET headers and sidecars, and intervals
that stay right across midnight.

DICOM TM values ('235500.000000') and the 'HH:MM:SS' strings of dcm2niix and BIDS sidecars
carry no date, so an acquisition that passes midnight would give negative intervals if the
times were simply subtracted. Every interval within one PET session is far shorter than a day;
the helpers below rely on that and nothing else."""

from __future__ import annotations

import re
from datetime import date, datetime

DAY_S = 86400.0
DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%m/%d/%y", "%Y-%m-%d %H:%M:%S")


def parse_date(value: str) -> date | None:
    """IDA writes M/D/YYYY; ADNIMERGE and DXSUM write YYYY-MM-DD; folders and IDA sessions give
    YYYYMMDD. None when the value is none of these."""
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(value.strip(), fmt).date()
        except ValueError:
            continue
    return None


CLOCK = re.compile(r"(\d{2}):?(\d{2}):?(\d{2}(?:\.\d*)?)")


def clock_seconds(value: object) -> float | None:
    """Seconds after midnight of 'HH:MM:SS[.ffffff]' or DICOM 'HHMMSS[.ffffff]'; None when the
    value is absent or not a clock time."""
    if not isinstance(value, str):
        return None
    match = CLOCK.fullmatch(value.strip())
    if match is None:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), float(match.group(3))
    if hours > 23 or minutes > 59 or seconds >= 61:
        return None
    return hours * 3600.0 + minutes * 60.0 + seconds


def seconds_after(later: float, earlier: float) -> float:
    """``later - earlier`` in [0, 1 day): a clock that passed midnight still gives a positive interval."""
    return (later - earlier) % DAY_S


def signed_seconds(a: float, b: float) -> float:
    """``a - b`` in [-12 h, 12 h): for two clock times of one session that may come in either order."""
    return (a - b + DAY_S / 2) % DAY_S - DAY_S / 2


def series_offsets(clocks: list[float]) -> list[float]:
    """Seconds of each clock time after the first of one acquisition, across midnight.

    The acquisition starts after the longest gap of the 24-hour circle (its frames span far
    less than a day): 23:55, 00:00, 00:05 give 0, 300, 600, not 86100, 0, 300."""
    if len(clocks) < 2:
        return [0.0 for _ in clocks]
    ordered = sorted(clocks)
    gaps = [seconds_after(ordered[(i + 1) % len(ordered)], ordered[i]) for i in range(len(ordered))]
    start = ordered[(gaps.index(max(gaps)) + 1) % len(ordered)]
    return [seconds_after(c, start) for c in clocks]
