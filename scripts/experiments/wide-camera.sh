#!/usr/bin/env bash
# The shipped Rooms model on drives recorded twice, with the training camera and with a
# wider one (128x160 pixels, 80 degrees vertical, 93 horizontal), in the same rooms along
# the same paths: replayed offline with the wider camera's images cropped by its
# camera_info, and not cropped (docs/node.md, "The camera"). About 10 minutes of one core.
set -euo pipefail
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/wide-camera}
SEEDS=${SEEDS:-$(seq 201 210)}
for s in $SEEDS; do
  for camera in train wide; do
    extra=()
    [ "$camera" = wide ] && extra=(--camera-size 128 160 --camera-fov-y 80)
    [ -d "$OUT/bags/$camera-$s" ] || dmn_sim_bag --domain rooms --seed "$s" --duration 60 \
      --contexts 24 "${extra[@]}" --out "$OUT/bags/$camera-$s" > /dev/null 2>&1
  done
  [ -f "$OUT/train-$s/metrics.json" ] || dmn_evaluate_bag "$OUT/bags/train-$s" \
    --out "$OUT/train-$s" --quiet > /dev/null
  [ -f "$OUT/cropped-$s/metrics.json" ] || dmn_evaluate_bag "$OUT/bags/wide-$s" \
    --out "$OUT/cropped-$s" --quiet > /dev/null
  [ -f "$OUT/uncropped-$s/metrics.json" ] || dmn_evaluate_bag "$OUT/bags/wide-$s" \
    --camera-info-topic /none --out "$OUT/uncropped-$s" --quiet > /dev/null
done
python -m dmn_localization.replay.summary $(for c in train cropped uncropped; do
  for s in $SEEDS; do echo "$OUT/$c-$s"; done; done)
