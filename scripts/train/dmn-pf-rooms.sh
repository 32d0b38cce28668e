#!/usr/bin/env bash
# Train models/dmn-pf-rooms.pt: three stages on one CPU core each (about 4.5 hours in all),
# each starting from the best checkpoint of the one before. Needs `make data`.
set -euo pipefail
export OMP_NUM_THREADS=1
COMMON=(--model dmn-pf --train data/rooms-train --val data/rooms-val --lr-schedule cosine
        --select-by global_success --patience 100 --frame-shift 0.5 --frame-turn 180
        --particles 128 --uniform-share 0.5 --density-weight 0.5)
# 1: one-step episodes, 6 per encoded map, with the pose-match branch
dmn_train "${COMMON[@]}" --out runs/rooms/stage1 --budget-samples 1000000 \
  --val-every-samples 100000 --lr 5e-4 --seed 0 --queries-per-map 6 \
  --model-option attention_prior=2 --model-option pose_match_dim=64
# 2: episodes of three views, two per map
dmn_train "${COMMON[@]}" --out runs/rooms/stage2 --init-from runs/rooms/stage1/best.pt \
  --budget-samples 1000000 --val-every-samples 100000 --val-global-episodes 500 --lr 3e-4 \
  --seed 1 --queries-per-map 2 --sequence-steps 3
# 3: the same, longer
dmn_train "${COMMON[@]}" --out runs/rooms/stage3 --init-from runs/rooms/stage2/best.pt \
  --budget-samples 3000000 --val-every-samples 200000 --val-global-episodes 500 --lr 3e-4 \
  --seed 2 --queries-per-map 2 --sequence-steps 3
