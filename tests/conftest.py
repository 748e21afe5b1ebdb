"""Shared fixtures: a small real demo cohort, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

import torch

from magicflow.demo import write_demo_cohort

DEMO_SUBJECTS = 4


@pytest.fixture(scope="session")
def demo_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-subject demo cohort (one per MRI scanner, two AD and two CN), all tracers."""
    out = tmp_path_factory.mktemp("demo") / "bids"
    write_demo_cohort(out, subjects=DEMO_SUBJECTS, seed=7, progress=False)
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine every hand-off between
    threads costs milliseconds: run single-threaded, then restore the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
