#!/usr/bin/env bash
# Train models/dmn-pf-mazes.pt: the first Rooms stage of scripts/train/dmn-pf-rooms.sh, then
# two Mazes stages on one CPU core each; the last stage's final weights are compared with its
# best.pt on validation episodes (sequential global success) and the better one shipped.
set -euo pipefail
export OMP_NUM_THREADS=1
COMMON=(--model dmn-pf --train data/mazes-train --val data/mazes-val --lr-schedule cosine
        --select-by global_success --patience 100 --frame-shift 0.5 --frame-turn 180
        --particles 128 --uniform-share 0.5 --density-weight 0.5 --val-global-episodes 500
        --lr 3e-4 --queries-per-map 2)
# 1: runs/rooms/stage1 of scripts/train/dmn-pf-rooms.sh
# 2: episodes of three views
dmn_train "${COMMON[@]}" --out runs/mazes/stage2 --init-from runs/rooms/stage1/best.pt \
  --budget-samples 1000000 --val-every-samples 100000 --seed 1 --sequence-steps 3
# 3: episodes of five views, longer
dmn_train "${COMMON[@]}" --out runs/mazes/stage3 --init-from runs/mazes/stage2/best.pt \
  --budget-samples 2500000 --val-every-samples 200000 --seed 2 --sequence-steps 5
python -m dmn_localization.learning.final_weights runs/mazes/stage3
dmn_evaluate --data data/mazes-val --checkpoint runs/mazes/stage3/best.pt \
  runs/mazes/stage3/final.pt --baselines --episodes 300 --frame-shift 0.5 --frame-turn 180 \
  --protocols sequential-global
