"""GPU slots of local runs (magicflow/gpu_slots.py), on fake devices: this machine has no GPU,
and a slot is only a lock file and a CUDA_VISIBLE_DEVICES value. Real processes throughout: jobs
started at once through `magicflow gpu-slot`, a holder killed with SIGKILL, and a real Snakemake
run of the Snakefile's GPU counting (workflow/rules/common.smk) with more cores than GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from magicflow.config import REPO_ROOT
from magicflow.errors import InputError
from magicflow.gpu_slots import visible_gpus

SLOT = [sys.executable, "-m", "magicflow", "gpu-slot"]

# A job on its slot: takes the next arrival number (an O_EXCL file per number, so two jobs never
# share one), marks its device busy (O_EXCL again: a second job on the device at the same time
# finds the mark and says so), then holds the device until as many jobs have arrived as fill its
# wave of `width` (the first `width` jobs wait for each other, so they must run side by side; the
# next wave can start only when a slot is given back), and records what it saw.
PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    folder, width, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    device = os.environ.get("CUDA_VISIBLE_DEVICES")
    rank = 1
    while True:
        try:
            os.close(os.open(folder / f"arrived-{rank}", os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            rank += 1
    try:
        os.close(os.open(folder / f"busy-{device}", os.O_CREAT | os.O_EXCL))
        shared = False
    except FileExistsError:
        shared = True
    wave_end = -(-rank // width) * width
    deadline = time.monotonic() + 60
    while not (folder / f"arrived-{wave_end}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    waited_out = not (folder / f"arrived-{wave_end}").exists()
    if not shared:
        os.remove(folder / f"busy-{device}")
    out.write_text(json.dumps({"device": device, "rank": rank, "shared": shared, "waited_out": waited_out}))
    """
)


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "MAGICFLOW_GPUS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


def test_the_devices_a_run_sees():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8a1c, GPU-77f0"}) == ["GPU-8a1c", "GPU-77f0"]
    # CUDA ignores everything from the first invalid entry on: "" and "-1" hide every GPU
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,0"}) == ["1"]
    # MAGICFLOW_GPUS keeps the first N visible ones, or stands for N fake ones where none are
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3,5", "MAGICFLOW_GPUS": "2"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "", "MAGICFLOW_GPUS": "4"}) == ["0", "1", "2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3", "MAGICFLOW_GPUS": "0"}) == []
    with pytest.raises(InputError, match="only 2 GPUs are visible"):
        visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3", "MAGICFLOW_GPUS": "3"})
    with pytest.raises(InputError, match="expected a number of GPUs"):
        visible_gpus({"MAGICFLOW_GPUS": "all"})


def test_eight_jobs_on_four_slots_never_share_a_device(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    marks = tmp_path / "marks"
    marks.mkdir()
    command = [*SLOT, "--gpus", "1", "--devices", "0,1,2,3", "--lock-dir", str(tmp_path / "locks"), "--"]
    jobs = [
        subprocess.Popen(
            [*command, sys.executable, str(probe), str(marks), "4", str(tmp_path / f"job{i}.json")], env=environment()
        )
        for i in range(8)
    ]
    assert [job.wait(timeout=180) for job in jobs] == [0] * 8
    seen = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(8)]
    assert not any(s["shared"] for s in seen), seen  # no device held by two jobs at once
    assert not any(s["waited_out"] for s in seen), seen  # four jobs did run side by side, twice
    by_rank = sorted(seen, key=lambda s: s["rank"])
    assert [s["rank"] for s in by_rank] == list(range(1, 9))
    for wave in (by_rank[:4], by_rank[4:]):
        assert sorted(s["device"] for s in wave) == ["0", "1", "2", "3"], seen


@pytest.mark.slow
def test_a_killed_holder_frees_its_slot(tmp_path: Path):
    command = [*SLOT, "--gpus", "1", "--devices", "5", "--lock-dir", str(tmp_path / "locks"), "--"]
    started, second = tmp_path / "started", tmp_path / "second"
    holder = subprocess.Popen(
        [*command, sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(600)"],
        env=environment(),
    )
    try:
        for _ in range(600):
            if started.exists():
                break
            time.sleep(0.1)
        assert started.exists(), "the holder never started"
        waiter = subprocess.Popen(
            [*command, "sh", "-c", f'echo "$CUDA_VISIBLE_DEVICES" > {second}'],
            env=environment(),
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert waiter.poll() is None and not second.exists()  # the one slot is taken: it waits
        holder.send_signal(signal.SIGKILL)  # the exec'd command itself: no handler, no clean-up
        holder.wait(timeout=10)
        assert waiter.wait(timeout=60) == 0
        assert second.read_text() == "5\n"
        assert "busy, waiting" in waiter.stderr.read()
    finally:
        holder.kill()


def test_without_devices_the_command_runs_as_it_is(tmp_path: Path):
    # a SLURM job: the Snakefile hands out no devices, and SLURM's own CUDA_VISIBLE_DEVICES stands
    out = tmp_path / "seen"
    command = [*SLOT, "--gpus", "1", "--devices", "", "--", "sh", "-c", f'echo "$CUDA_VISIBLE_DEVICES" > {out}; exit 3']
    assert subprocess.run(command, env=environment(CUDA_VISIBLE_DEVICES="7")).returncode == 3
    assert out.read_text() == "7\n"
    # a job of an experiment kept on the CPU (gpu=0) takes no slot either
    command = [
        *SLOT,
        "--gpus",
        "0",
        "--devices",
        "0",
        "--lock-dir",
        str(tmp_path / "locks"),
        "--",
        "sh",
        "-c",
        f"echo ${{CUDA_VISIBLE_DEVICES-unset}} > {out}",
    ]
    assert subprocess.run(command, env=environment()).returncode == 0
    assert out.read_text() == "unset\n"
    assert not (tmp_path / "locks").exists()


@pytest.mark.slow
def test_a_local_run_runs_no_more_gpu_jobs_than_gpus(tmp_path: Path):
    """workflow/rules/common.smk as the Snakefile includes it, in a real Snakemake run with 8
    cores and MAGICFLOW_GPUS=2: 6 jobs through magicflow_command(gpu=True), each a probe holding
    its device until its wave of 2 has arrived."""
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config["experiments"] = {}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "workflow").symlink_to(REPO_ROOT / "workflow")  # common.smk finds logged.sh beside the Snakefile
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "marks").mkdir()
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            configfile: "config/config.yaml"
            include: "workflow/rules/common.smk"

            EXPERIMENT_SETTINGS = {{"probe": {{"training": {{"device": "auto"}}}}}}  # as experiments.smk has them

            rule all:
                input: expand("out/probe/{{i}}.json", i=range(6))

            rule probe:  # resources as the GPU rules declare them
                output: "out/{{experiment}}/{{i}}.json"
                log: "logs/{{experiment}}/{{i}}.log"
                resources: gpu=gpu_request, **GPU_RESOURCES
                # the probe as a magicflow command: a nested gpu-slot asking for no GPU runs it as it is
                shell: magicflow_command("gpu-slot --gpus 0 -- {sys.executable} probe.py marks 2 {{output}}", gpu=True)
            """
        )
    )
    locks = tmp_path / "locks"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "8",
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(tmp_path / "Snakefile"),
        ],
        env=environment(MAGICFLOW_GPUS="2", MAGICFLOW_GPU_LOCKS=str(locks)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    seen = [json.loads((tmp_path / "out" / "probe" / f"{i}.json").read_text()) for i in range(6)]
    assert not any(s["shared"] or s["waited_out"] for s in seen), seen
    by_rank = sorted(seen, key=lambda s: s["rank"])
    for wave in (by_rank[0:2], by_rank[2:4], by_rank[4:6]):
        assert sorted(s["device"] for s in wave) == ["0", "1"], seen
    logs = [(tmp_path / "logs" / "probe" / f"{i}.log").read_text() for i in range(6)]
    assert all("magicflow gpu-slot: CUDA_VISIBLE_DEVICES=" in log for log in logs), logs
    # Snakemake itself held the other jobs back: none had to wait for a slot
    assert not any("busy, waiting" in log for log in logs), logs
    assert sorted(p.name for p in locks.iterdir()) == ["gpu-0.lock", "gpu-1.lock"]
