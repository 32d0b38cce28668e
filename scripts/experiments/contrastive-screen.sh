#!/usr/bin/env bash
# Does the contrastive term make the status more honest? The shipped Rooms model trained
# $BUDGET samples more (default 300,000) with the options of its last stage, once with
# --nce-weight $NCE (default 0.5) and once without (the same seed and budget), then each on
# the kidnap benchmark at the default recovery rates and on the held-out test
# (docs/benchmarks.md, "What the status can and cannot tell"). With NEAR set, the second run
# keeps the contrastive term and draws that share of its other poses a little off the
# truth (--nce-near-share) instead of dropping it. SEED (default 3) seeds both runs.
# About 40 minutes at the default budget with the two runs on the two cores. Needs `make
# data` and the held-out set of docs/findings.md. The longer screen of docs/benchmarks.md:
# both runs of
#   OUT=runs/nce-long BUDGET=1200000 VAL_EVERY=200000 NEAR=0.5 bash $0
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/contrastive}
NCE=${NCE:-0.5}
BUDGET=${BUDGET:-300000}
VAL_EVERY=${VAL_EVERY:-100000}
NEAR=${NEAR:-}
SEED=${SEED:-3}
source "$(dirname "$0")/last-stage.sh"
if [ -n "$NEAR" ]; then
  second=contrastive-$NCE-near-$NEAR
  continue_last_stage "contrastive-$NCE" rooms --nce-weight "$NCE" &
  continue_last_stage "$second" rooms --nce-weight "$NCE" --nce-near-share "$NEAR" & wait
else
  second=control
  continue_last_stage "contrastive-$NCE" rooms --nce-weight "$NCE" &
  continue_last_stage control rooms & wait
fi
measure "contrastive-$NCE" heldout-rooms-test
measure "$second" heldout-rooms-test
