"""Shared fixtures: a small real demo cohort, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicflow.demo import write_demo_cohort

DEMO_SUBJECTS = 4


@pytest.fixture(scope="session")
def demo_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-subject demo cohort (one per MRI scanner, two AD and two CN), all tracers."""
    out = tmp_path_factory.mktemp("demo") / "bids"
    write_demo_cohort(out, subjects=DEMO_SUBJECTS, seed=7, progress=False)
    return out
