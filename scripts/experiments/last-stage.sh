# Sourced by the screening scripts beside it: the shipped Rooms model trained on with the
# options of its last stage (scripts/train/dmn-pf-rooms.sh), and a run's best.pt measured
# on the kidnap benchmark and a held-out set. The caller sets OUT, BUDGET, VAL_EVERY, SEED.

continue_last_stage() {  # continue_last_stage NAME DATA-PREFIX [more dmn_train options]
  local name=$1 data=$2
  shift 2
  dmn_train --model dmn-pf --train "data/$data-train" --val "data/$data-val" \
    --lr-schedule cosine --select-by global_success --patience 100 --frame-shift 0.5 \
    --frame-turn 180 --particles 128 --uniform-share 0.5 --density-weight 0.5 \
    --queries-per-map 2 --sequence-steps 3 --val-global-episodes 500 \
    --init-from models/dmn-pf-rooms.pt --budget-samples "$BUDGET" \
    --val-every-samples "$VAL_EVERY" --lr 1e-4 --seed "$SEED" --quiet --out "$OUT/$name" "$@"
}

measure() {  # measure NAME HELD-OUT-SET: its best.pt on the kidnap benchmark and held out
  mkdir -p "$OUT/models-$1"
  ln -sf "../$1/best.pt" "$OUT/models-$1/dmn-pf-rooms.pt"
  python -m dmn_localization.bench.kidnap_bench --seeds 20 --domains rooms --candidates 3 \
    --first-seed "${KIDNAP_FIRST_SEED:-0}" --models "$OUT/models-$1" \
    --out "$OUT/kidnap-$1.json" | grep '^| rooms'
  dmn_evaluate --data "data/$2" --checkpoint "$OUT/$1/best.pt" --baselines \
    --episodes 1000 --frame-shift 0.5 --frame-turn 180 \
    --protocols one-step-global sequential-global --out "$OUT/heldout-$1.json" | grep dmn-pf
}
