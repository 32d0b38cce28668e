#!/usr/bin/env bash
# Adapt the shipped Rooms model to a camera it was not trained with (1.5 m high, level,
# 60 x 60 degrees: narrower than the model's 70, so cropping cannot help), from simulated
# bags of that camera, and compare the two models on held-out bags (docs/training.md,
# "Adapt a model to your robot"). About an hour on one CPU core. Writes under $OUT.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/adapt}
CAMERA=(--camera-height 1.5 --camera-pitch 0 --camera-fov-y 60)
bags() {  # bags FIRST LAST DURATION CONTEXTS: one simulated room per seed
  for ((s = $1; s <= $2; s++)); do
    [ -d "$OUT/bags/high-$s" ] || dmn_sim_bag --domain rooms --seed "$s" --duration "$3" \
      --contexts "$4" "${CAMERA[@]}" --out "$OUT/bags/high-$s" > /dev/null
  done
}
# the robot's recordings: a survey of 100 posed views in each of 110 rooms (training
# 3001-3100, validation 3101-3110), and 60 s drives through 10 other rooms with 24 mapping
# views
bags 3001 3110 1 100
bags 3401 3410 60 24
survey=(--image-topic /mapping/image --pose-topic /mapping/pose --views-per-env 10)
[ -f "$OUT/robot-train/manifest.json" ] || dmn_dataset from-bag \
  $(seq -f "$OUT/bags/high-%g" 3001 3100) "${survey[@]}" --out "$OUT/robot-train"
[ -f "$OUT/robot-val/manifest.json" ] || dmn_dataset from-bag \
  $(seq -f "$OUT/bags/high-%g" 3101 3110) "${survey[@]}" --out "$OUT/robot-val"
# fine-tune the shipped model (resumes when interrupted)
dmn_train --model dmn-pf --train "$OUT/robot-train" --val "$OUT/robot-val" \
  --out "$OUT/fine-tuned" --init-from models/dmn-pf-rooms.pt --budget-samples 800000 \
  --val-every-samples 100000 --val-global-episodes 500 --lr 1e-4 --lr-schedule cosine \
  --select-by global_success --patience 100 --frame-shift 0.5 --frame-turn 180 \
  --particles 128 --uniform-share 0.5 --density-weight 0.5 --queries-per-map 2 \
  --sequence-steps 3 --seed 0 --quiet
# both models on the held-out drives; for reference, the shipped model on the same drives
# recorded with its own camera
for s in $(seq 3401 3410); do
  for model in shipped fine-tuned; do
    checkpoint=models/dmn-pf-rooms.pt
    [ "$model" = fine-tuned ] && checkpoint=$OUT/fine-tuned/best.pt
    [ -f "$OUT/replay/$model-$s/metrics.json" ] || dmn_evaluate_bag "$OUT/bags/high-$s" \
      --model "$checkpoint" --out "$OUT/replay/$model-$s" --quiet > /dev/null
  done
  [ -d "$OUT/bags/own-$s" ] || dmn_sim_bag --domain rooms --seed "$s" --duration 60 \
    --contexts 24 --out "$OUT/bags/own-$s" > /dev/null
  [ -f "$OUT/replay/own-camera-$s/metrics.json" ] || dmn_evaluate_bag "$OUT/bags/own-$s" \
    --out "$OUT/replay/own-camera-$s" --quiet > /dev/null
done
python -m dmn_localization.replay.summary $(for m in shipped fine-tuned own-camera; do
  for s in $(seq 3401 3410); do echo "$OUT/replay/$m-$s"; done; done)
