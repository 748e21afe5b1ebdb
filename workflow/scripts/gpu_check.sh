#!/usr/bin/env bash
# The prepared GPU check of issue 17: on one H100/H200, within 8 minutes, one JSON object with
# the paper preset (both couplings) at batch 8 in fp32, bf16 and bf16 + torch.compile (training
# step ms and peak memory, images/s at batch 64, classification ms per image over 7 labels),
# each checked against the targets (step <= 250 ms, <= 12 GB, >= 400 images/s, <= 2 ms/img),
# the capacity figures against the authors', and the normflows conditional Glow in the same run.
#
#   bash workflow/scripts/gpu_check.sh > gpu_check.json
#
# Extra arguments go to `magicflow bench` and win over these (the test suite runs it on CPU at
# a tiny size). PYTHON picks the interpreter (default: python).
set -euo pipefail
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "${PYTHON:-python}" -m magicflow bench --suite gpu --device cuda \
    --preset paper --size 182 --batch 8 --sample-batch 64 --classes 7 --steps 5 "$@"
