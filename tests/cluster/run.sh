#!/usr/bin/env bash
# The workflow on a real one-node SLURM cluster, through profiles/slurm: installs slurm-wlm and munge
# (apt), starts munged, slurmctld and slurmd as root without systemd, runs the demo through training,
# sampling, classification and attribution of one tiny experiment (tests/cluster/write_config.py) in
# a scratch working directory, and checks
# - that every job went through SLURM: its job ID in Snakemake's output and, COMPLETED, in SLURM's
#   job-completion file; per-subject preprocessing as one group job per subject; training holding
#   the node's (pretend) GPU;
# - that every GPU job (training; a fold's sampling, classification and attribution as one group
#   job) went to the GPU partition the config names, with one GPU and the configured CPUs per GPU,
#   and every other job to the default partition;
# - that a job failing on the cluster (a second experiment asks for a class the data lacks) is
#   reported with the path of the rule's log, and that a rerun would redo only that experiment.
# The daemons are stopped by PID on exit, and /etc/slurm is left as it was found.
#
# Needs root and apt-get; skips (exit 0, with a message) otherwise, or where /etc/slurm/slurm.conf
# already exists (a real SLURM installation is never touched). Called by .ci/run after the test
# suite. About 6 minutes of workflow on 2 otherwise idle cores, plus about 1.5 for building
# .venv-slurm (the pipeline with the slurm extra of pyproject.toml) on first use; 10 minutes in all
# when other work loads the machine.
# Environment: MAGICFLOW_SLURM_VENV (default .venv-slurm), KEEP_SCRATCH=1 keeps the scratch folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/cluster"
START=$(date +%s)
say() { echo "[cluster test, $(( $(date +%s) - START )) s] $*"; }
fail() { echo "SLURM cluster test FAILED: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "SLURM cluster test skipped: it needs root and apt-get to install slurm-wlm and munge"
    exit 0
fi
SLURM_ETC=/etc/slurm
MARK="# written by magicflow tests/cluster/run.sh"
if [ -e "$SLURM_ETC/slurm.conf" ] && ! head -1 "$SLURM_ETC/slurm.conf" | grep -qF "$MARK"; then
    echo "SLURM cluster test skipped: $SLURM_ETC/slurm.conf exists (a SLURM installation this test must not touch)"
    exit 0
fi

# --- packages and the Python environment -------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
say "$(slurmctld -V), $(munged --version 2>&1 | head -1)"
# The pipeline with the SLURM executor plugin, in its own environment (see pyproject.toml, extra slurm).
# Jobs inherit PATH (sbatch --export=ALL), so they run the same Python.
export MAGICFLOW_VENV="${MAGICFLOW_SLURM_VENV:-$ROOT/.venv-slurm}" MAGICFLOW_EXTRAS=slurm
source "$ROOT/workflow/scripts/setup-env.sh"
say "Python environment: $MAGICFLOW_VENV ($(python -c 'import importlib.metadata as m; print("snakemake", m.version("snakemake"), "+ slurm plugin", m.version("snakemake-executor-plugin-slurm"))'))"

# --- daemons -----------------------------------------------------------------------------------
SCRATCH="$(mktemp -d /tmp/magicflow-slurm.XXXXXX)"
WORK="$SCRATCH/work"
mkdir -p "$SCRATCH"/{munge,state,spool,log} "$WORK"
chmod 755 "$SCRATCH/munge"   # munged wants its socket folder searchable by all
DAEMONS=()   # PIDs, in start order: munged, slurmctld, slurmd
stop() {     # TERM, up to 10 s to exit, then KILL (slurmd ignores TERM while it retries to register)
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 20); do kill -0 "$1" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
cleanup() {
    status=$?
    set +e
    if [ "${#DAEMONS[@]}" -ge 2 ] && kill -0 "${DAEMONS[1]}" 2>/dev/null; then
        timeout 10 scancel --quiet --user=root >/dev/null 2>&1
    fi
    for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do stop "${DAEMONS[$i]}"; done
    if head -1 "$SLURM_ETC/slurm.conf" 2>/dev/null | grep -qF "$MARK"; then
        rm -f "$SLURM_ETC/slurm.conf" "$SLURM_ETC/gres.conf"
    fi
    if [ "$status" -ne 0 ] || [ "${KEEP_SCRATCH:-0}" = 1 ]; then
        echo "scratch folder kept: $SCRATCH (daemon logs in log/, Snakemake's output in snakemake*.out)" >&2
    else
        rm -rf "$SCRATCH"
    fi
}
trap cleanup EXIT

HOST="$(hostname -s)"
read -r CTLD_PORT SLURMD_PORT < <(python - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
fill() {
    { echo "$MARK"; sed -e "s|@HOST@|$HOST|g" -e "s|@SCRATCH@|$SCRATCH|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$1"; } > "$2"
}
fill "$HERE/slurm.conf.in" "$SLURM_ETC/slurm.conf"
fill "$HERE/gres.conf.in" "$SLURM_ETC/gres.conf"

mungekey --create --keyfile="$SCRATCH/munge/munge.key" 2>/dev/null \
    || { dd if=/dev/urandom of="$SCRATCH/munge/munge.key" bs=1024 count=1 2>/dev/null; chmod 400 "$SCRATCH/munge/munge.key"; }
munged --foreground --force --socket="$SCRATCH/munge/munge.socket" --key-file="$SCRATCH/munge/munge.key" \
    --pid-file="$SCRATCH/munge/munged.pid" --log-file="$SCRATCH/log/munged.log" \
    --seed-file="$SCRATCH/munge/munged.seed" > "$SCRATCH/log/munged.out" 2>&1 &
DAEMONS+=($!)
slurmctld -D > "$SCRATCH/log/slurmctld.out" 2>&1 &
DAEMONS+=($!)
slurmd -D > "$SCRATCH/log/slurmd.out" 2>&1 &
DAEMONS+=($!)
node_state() { timeout 5 sinfo --noheader --format=%t 2>/dev/null; }
for _ in $(seq 30); do
    for pid in "${DAEMONS[@]}"; do kill -0 "$pid" 2>/dev/null || break 2; done
    [ "$(node_state)" = idle ] && break
    sleep 1
done
if [ "$(node_state)" != idle ]; then
    tail -n 5 "$SCRATCH"/log/*.log
    fail "the node did not come up idle (sinfo: $(timeout 5 sinfo 2>&1))"
fi
say "SLURM up: $(sinfo --noheader --format='node %N, %c CPUs, %m MB, %G, state %t')"
[ "$(timeout 60 srun --gpus=1 --time=1 printenv CUDA_VISIBLE_DEVICES)" = 0 ] || fail "a one-GPU srun did not get the GPU"

# --- the workflow through SLURM ----------------------------------------------------------------
python "$HERE/write_config.py" "$ROOT/config/config.yaml" "$WORK/config/config.yaml"
# What this cluster needs beyond the profile: no accounting database, so job states come from
# squeue; an early first status check, as the test's jobs take seconds.
SMK=(python -m snakemake --snakefile "$ROOT/Snakefile" --directory "$WORK" --profile profiles/slurm
     --slurm-status-command squeue --slurm-init-seconds-before-status-checks 3)
cd "$ROOT"
say "snakemake --profile profiles/slurm sample classify attribution (output: $SCRATCH/snakemake.out)"
set +e
"${SMK[@]}" sample classify attribution > "$SCRATCH/snakemake.out" 2>&1
rc=$?
set -e
say "snakemake exited with $rc (1 expected: the broken experiment's data check fails, keep-going finishes the rest)"

# --- checks ------------------------------------------------------------------------------------
OUT="$SCRATCH/snakemake.out"
JOBCOMP="$SCRATCH/jobcomp.txt"
show() { tail -n 60 "$OUT"; fail "$*"; }
[ "$rc" -eq 1 ] || show "snakemake exited with $rc"
for made in models/fold-0/best.pt samples/fold-0/samples.npz predictions/fold-0/predictions.tsv attribution/fold-0/maps.npz; do
    [ -f "$WORK/results/tiny/$made" ] || show "no $made of the tiny experiment"
done
# "Job <n> has been submitted with SLURM jobid <id> (log: .../<rule_or_group>/...)"
slurm_ids() { grep -oP "submitted with SLURM jobid \K[0-9]+(?= \(log: .*/${1:-})" "$OUT" || true; }
count() { slurm_ids "$1" | wc -l; }
mapfile -t IDS < <(slurm_ids)
for what in rule_demo_cohort/ rule_dataset_manifest/ rule_preprocess_template/ rule_qc_table/ rule_dataset_slices/ rule_train_fold/; do
    [ "$(count "$what")" -eq 1 ] || show "expected one SLURM job of ${what%/}, found $(count "$what")"
done
[ "$(count rule_check_data/)" -eq 2 ] || show "expected two data-check jobs (tiny, broken), found $(count rule_check_data/)"
[ "$(count rule_split/)" -eq 1 ] || show "expected one split job (tiny; broken stops at its data check), found $(count rule_split/)"
[ "$(count group_subject)" -eq 3 ] || show "expected 3 per-subject preprocessing group jobs (3 subjects), found $(count group_subject)"
# the tiny experiment's one fold: sampling, classification and attribution as one submission (a
# group job's log folder is named by its group and its rules)
INFERENCE=group_inference_tiny_fold-0_attribution_fold_classify_fold_sample_fold/
[ "$(count "$INFERENCE")" -eq 1 ] || show "expected one group job $INFERENCE, found $(count "$INFERENCE")"
for rule in sample_fold classify_fold attribution_fold; do
    [ "$(count "rule_$rule/")" -eq 0 ] || show "$rule was submitted on its own, outside its fold's group job"
done
CHECK_BROKEN="$(slurm_ids rule_check_data/broken/)"
for id in "${IDS[@]}"; do
    want=COMPLETED
    [ "$id" = "$CHECK_BROKEN" ] && want=FAILED
    grep -qE "^JobId=$id .*JobState=$want " "$JOBCOMP" || show "SLURM job $id is not $want in $JOBCOMP"
done
TRAIN_ID="$(slurm_ids rule_train_fold/)"
scontrol --details show job "$TRAIN_ID" | grep -q "GRES=gpu" \
    || fail "training job $TRAIN_ID did not hold a GPU: $(scontrol --details show job "$TRAIN_ID")"
say "${#IDS[@]} jobs went through SLURM (3 per-subject groups, training holding the GPU), each in the job-completion file as it should be"

# GPU jobs: the GPU partition (slurm.gpu_partition), one GPU (sbatch --gpus=1: TresPerJob) and 2 CPUs
# per GPU (slurm.cpus_per_gpu: CpusPerTres, ProcCnt); every other job in the default partition.
INFERENCE_ID="$(slurm_ids "$INFERENCE")"
GPU_JOBS=""
for id in "${IDS[@]}"; do
    record="$(grep -E "^JobId=$id " "$JOBCOMP")"
    if [ "$id" = "$TRAIN_ID" ] || [ "$id" = "$INFERENCE_ID" ]; then
        job="$(scontrol --details show job "$id")"
        grep -q " Partition=gpu " <<<"$record" || show "GPU job $id is not in the gpu partition: $record"
        grep -q " ProcCnt=2 " <<<"$record" || show "GPU job $id did not get 2 CPUs: $record"
        grep -qE "TresPerJob=gres[:/]gpu:1( |$)" <<<"$job" || show "GPU job $id did not ask for one GPU: $job"
        grep -qE "CpusPerTres=gres[:/]gpu:2( |$)" <<<"$job" || show "GPU job $id did not ask for 2 CPUs per GPU: $job"
        grep -q "GRES=gpu" <<<"$job" || show "GPU job $id did not hold the GPU: $job"
        GPU_JOBS+="; $id: $(grep -oE '(Partition|ProcCnt)=[^ ]+' <<<"$record" | xargs) $(grep -oE '(TresPerJob|CpusPerTres)=[^ ]+' <<<"$job" | xargs)"
    else
        grep -q " Partition=test " <<<"$record" || show "job $id (no GPU) is not in the default partition: $record"
    fi
done
say "GPU jobs (training $TRAIN_ID, the fold's group $INFERENCE_ID) in the gpu partition with one GPU and 2 CPUs, the rest in the default one${GPU_JOBS}"

# The failed job is reported with the rule's log, whose end is shown (show-failed-logs).
ERROR="$(sed -n '/Error in rule check_data/,/^$/p' "$OUT")"
[ -n "$ERROR" ] || show "no 'Error in rule check_data' in the output"
grep -q "log: results/logs/check_data/broken.log" <<<"$ERROR" || show "the error does not name the rule's log results/logs/check_data/broken.log"
grep -q "3 folds but the manifests hold too few subjects per class (AD: 2, CN: 1)" "$OUT" || show "the failed job's log was not shown"
say "the failed job (SLURM job $CHECK_BROKEN) is reported with $(grep -m1 -oE 'log: .*' <<<"$ERROR" | sed 's/ (check.*//')"

# A rerun redoes only what failed: the broken experiment's check, split and training, nothing else.
PLAN="$("${SMK[@]}" --dry-run train --quiet rules 2>&1)"
JOBS="$(grep -E '^[a-z_]+ +[0-9]+$' <<<"$PLAN" | grep -vE '^(total|train) ' | sort -u | tr -s ' \n' ' ')"
[ "$JOBS" = "check_data 1 split 1 train_fold 1 " ] || fail "a rerun would run more than the failed experiment's jobs: $PLAN"
say "a rerun plans only: $JOBS"

say "SLURM cluster test passed"
