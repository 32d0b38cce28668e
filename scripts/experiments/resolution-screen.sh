#!/usr/bin/env bash
# Does a finer camera image let the model resolve 1-2 m offsets from one view? The shipped
# Rooms model trained $BUDGET samples more (default 200,000) with the options of its last
# stage, once on 64x64 images of the same rooms (its convolutions take any size; the pooled
# feature grid stays 8x8) and once on the 32x32 images it was trained on (the control: the
# same seed and budget); then each on the kidnap benchmark at the node's defaults and on the
# held-out test of docs/findings.md at its own resolution. The two runs use the two cores.
# Needs `make data`, the held-out set of docs/findings.md and, at 64x64:
#   dmn_dataset generate --domain rooms --split train --image-size 64 64 --out data/rooms64-train
#   dmn_dataset generate --domain rooms --split val --image-size 64 64 --out data/rooms64-val
#   dmn_dataset generate --domain rooms --split test --envs 1000 --seed 2027 --image-size 64 64 \
#     --out data/heldout-rooms64-test
# Rerun to resume: each training run continues from its last checkpoint.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/resolution}
BUDGET=${BUDGET:-200000}
VAL_EVERY=${VAL_EVERY:-50000}
SEED=${SEED:-3}
source "$(dirname "$0")/last-stage.sh"
continue_last_stage image64 rooms64 & continue_last_stage image32 rooms & wait
measure image64 heldout-rooms64-test
measure image32 heldout-rooms-test
