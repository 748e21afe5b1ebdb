#!/usr/bin/env bash
# The prepared GPU check: the paper preset at 182x182, batch 8, 7 classes, each coupling kind in
# fp32, bf16 and bf16 + torch.compile, every variant in its own process under its own time limit,
# appending one JSON line as it finishes (training step ms with the first, compiling step apart in
# first_step_s; peak memory; images/s at batch 64; classification ms per image; each against the
# targets step <= 250 ms, <= 12 GB, >= 400 images/s, <= 2 ms/img), then the capacity figures and
# the normflows conditional Glow. A variant that runs out of time prints an "error" line and the
# check goes on, so a slow compilation never costs the other figures. At most 8 minutes in all.
#
#   bash workflow/scripts/gpu_check.sh | tee gpu_check.jsonl
#
# Extra arguments go to every `magicflow bench` call and win over these (the test suite runs it on
# CPU at a tiny size). PYTHON picks the interpreter (default: python3). Time limits in seconds:
# GPU_CHECK_EAGER_S (each fp32 and bf16 run, default 50), GPU_CHECK_COMPILE_S (each compiled run,
# default 120), GPU_CHECK_PEER_S (capacity and peer, default 40).
set -uo pipefail
python="${PYTHON:-python3}"
common=(--device cuda --preset paper --size 182 --batch 8 --sample-batch 64 --classes 7 --steps 5 --jsonl)

# one variant: LABEL SECONDS BENCH-ARGS...; a failure or time-out becomes a JSON line of its own
variant() {
    local label=$1 limit=$2
    shift 2
    local started=$SECONDS status=0
    timeout "$limit" "$python" -m magicflow bench "${common[@]}" --label "$label" "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        local why="exit status $status"
        [ "$status" -eq 124 ] && why="timed out after $limit s"
        printf '{"variant": "%s", "error": "%s", "wall_s": %d}\n' "$label" "$why" $((SECONDS - started))
    fi
}

eager="${GPU_CHECK_EAGER_S:-50}"
compiled="${GPU_CHECK_COMPILE_S:-120}"
for kind in generation classification; do
    variant "fp32_$kind" "$eager" --coupling "$kind" --no-bf16 --no-compile --no-capacity --no-peer "$@"
    variant "bf16_$kind" "$eager" --coupling "$kind" --bf16 --no-compile --no-capacity --no-peer "$@"
    variant "bf16_compile_$kind" "$compiled" --coupling "$kind" --bf16 --compile --no-capacity --no-peer "$@"
done
variant "capacity_and_peer" "${GPU_CHECK_PEER_S:-40}" --coupling none --capacity --peer "$@"
