"""One GPU per job on a workstation, where Snakemake hands out none.

Snakemake's ``gpu`` resource only counts GPU jobs; it gives a local job no device id (its issue
281), so without this every job of a local run lands on cuda:0. The Snakefile counts the run's
GPUs (:func:`visible_gpus`), caps the ``gpu`` resource at that count and passes the list to the
jobs in ``MAGICFLOW_GPU_DEVICES``; each GPU rule's command runs through ``magicflow gpu-slot``
(:func:`run`), which locks the file of a free device, sets ``CUDA_VISIBLE_DEVICES`` to it and
execs the command. The lock (``fcntl.flock``) belongs to the open file, which the command inherits
across exec: it lasts exactly as long as the job, however the job ends (SIGKILL included), and the
kernel, not a PID file that a killed job leaves behind, says which devices are free. The files lie
in one folder per user and machine, so concurrent runs of different working directories share the
devices too. Where the Snakefile hands out no devices (a run on SLURM, which sets each job's
``CUDA_VISIBLE_DEVICES`` itself, or a machine without GPUs) the command runs as it is."""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from magicflow.errors import InputError

DEVICES_VARIABLE = "MAGICFLOW_GPU_DEVICES"  # the run's devices, comma-separated; empty: step aside
COUNT_VARIABLE = "MAGICFLOW_GPUS"  # the user's override of how many GPUs a local run uses
LOCKS_VARIABLE = "MAGICFLOW_GPU_LOCKS"  # another folder for the lock files
POLL_SECONDS = 0.5


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The devices a local run may hand out, as ``CUDA_VISIBLE_DEVICES`` entries: those
    ``CUDA_VISIBLE_DEVICES`` lists when it is set (the user's or a scheduler's choice), else
    nvidia-smi's indices. ``MAGICFLOW_GPUS=N`` keeps the first N of them, or, where none are
    visible, stands for N devices 0..N-1 (the tests' fake GPUs); 0 turns the slots off."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    devices = _cuda_visible(listed) if listed is not None else _nvidia_smi()
    count = environ.get(COUNT_VARIABLE, "").strip()
    if not count:
        return devices
    if not count.isdigit():
        raise InputError(f"{COUNT_VARIABLE}={count!r}: expected a number of GPUs (0 or more)")
    wanted = int(count)
    if not devices:
        return [str(i) for i in range(wanted)]
    if wanted > len(devices):
        raise InputError(f"{COUNT_VARIABLE}={wanted}, but only {len(devices)} GPUs are visible: {','.join(devices)}")
    return devices[:wanted]


def _cuda_visible(value: str) -> list[str]:
    """CUDA's reading of ``CUDA_VISIBLE_DEVICES``: the entries before the first invalid one
    (empty, negative, or NoDevFiles), so ``""`` and ``"-1"`` hide every GPU."""
    devices = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry or entry.startswith("-") or entry == "NoDevFiles":
            break
        devices.append(entry)
    return devices


def _nvidia_smi() -> list[str]:
    """The driver's GPU indices; none without nvidia-smi or when it fails (no usable driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip().isdigit()]


def default_lock_dir() -> Path:
    """One folder per user and machine (local disk: flock on a network file system may not
    hold), so that every local run of this user shares the machine's GPUs."""
    return Path(os.environ.get(LOCKS_VARIABLE) or Path(tempfile.gettempdir()) / f"magicflow-gpu-slots-{os.getuid()}")


def lock_file(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def acquire(devices: Sequence[str], count: int, lock_dir: Path, poll_seconds: float = POLL_SECONDS) -> dict[str, int]:
    """Lock `count` free devices, waiting until that many are free at once (all or none per
    round, so two jobs can never hold part of what each needs). Returns device -> locked fd."""
    if not 1 <= count <= len(devices):
        raise InputError(f"a job asks for {count} GPUs; this run has {len(devices)}: {','.join(devices) or 'none'}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        held: dict[str, int] = {}
        for device in devices:
            fd = os.open(lock_file(lock_dir, device), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held[device] = fd
            if len(held) == count:
                return held
        for fd in held.values():
            os.close(fd)  # closing the only descriptor releases its lock
        if not waiting:
            print(f"magicflow gpu-slot: all of {','.join(devices)} busy, waiting for {count}", file=sys.stderr, flush=True)
            waiting = True
        time.sleep(poll_seconds)


def run(command: Sequence[str], gpus: int, devices: Sequence[str], lock_dir: Path) -> NoReturn:
    """Run `command` in place of this process on `gpus` devices of its own: the locks pass to it
    (inherited descriptors) and go when it ends. With no devices or no GPU asked, it runs as it is."""
    if not command:
        raise InputError("no command to run (magicflow gpu-slot ... -- COMMAND [ARG ...])")
    environment = dict(os.environ)
    if gpus > 0 and devices:
        held = acquire(devices, gpus, lock_dir)
        for fd in held.values():
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {' '.join(command)}\n".encode())  # who holds it, for a reader
            os.set_inheritable(fd, True)
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(held)
        print(f"magicflow gpu-slot: CUDA_VISIBLE_DEVICES={environment['CUDA_VISIBLE_DEVICES']}", file=sys.stderr, flush=True)
    try:
        os.execvpe(command[0], list(command), environment)
    except OSError as error:
        raise InputError(f"cannot run {command[0]}: {error}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the job uses (its gpu resource); 0 runs it as it is")
    parser.add_argument(
        "--devices",
        default=os.environ.get(DEVICES_VARIABLE, ""),
        help=f"the run's devices, comma-separated (default: ${DEVICES_VARIABLE}, set by the Snakefile; empty: run as it is)",
    )
    parser.add_argument(
        "--lock-dir",
        type=Path,
        default=None,
        help=f"folder of the lock files (default: ${LOCKS_VARIABLE}, else per user in the temp folder)",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]", help="what to run")


def run_command(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    devices = [d for d in (item.strip() for item in args.devices.split(",")) if d]
    run(command, args.gpus, devices, args.lock_dir or default_lock_dir())
