#!/usr/bin/env bash
# One prepared GPU session for the emoji quality push: an evaluator trained on train/ minus the validation
# hold-out, then four 64 px RGBA runs side by side on one GPU, an ablation read on validation:
#   A control   lean preset, full captions, random negatives (the shipped recipe, now on RGBA data)
#   B forms     A + prompt forms (full / typed / name) + style- and concept-swap negatives
#   C full      B + emoji preset (bilinear G, wider D with minibatch-stddev) + GP through augmentation + EMA in images
#   D no-swaps  C with random negatives only (does the swap matter, beside the prompt forms?)
# Inputs travel in carry/ (git-ignored), built on the CPU first:
#   python scripts/carry_emoji.py pack ../shared/data/emoji64a carry
# Outputs (model weights per run, everything else in one tarball) come back in $OUT.
# ABLATION=0: recipe B alone on the whole GPU for MINUTES (the next step for issue 14: the validation curve
# was still rising when the budget ended), and its exact training state comes back too, split into parts
# under the 16 MB return limit (join: cat B-state.part-* > training_state.safetensors).
set -u
ABLATION=${ABLATION:-1}
MINUTES=${MINUTES:-7}; BATCH=${BATCH:-256}; EPOCHS=${EPOCHS:-40}; DEVICE=${DEVICE:-cuda}
VAL_EVERY=${VAL_EVERY:-500}; LOG_EVERY=${LOG_EVERY:-100}; CARRY=${CARRY:-$PWD/carry}; NAME=${NAME:-emoji64a}
OUT=${OUT:-/tmp/ganvas-gpu-out}
mkdir -p "$OUT" /tmp/pkg
ln -sfn "$PWD" /tmp/pkg/ganvas
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1 GANVAS_CACHE=/tmp/ganvas-cache HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
RUNS=/tmp/ganvas-runs; DATA=/tmp/ganvas-data/emoji64a
rm -rf "$RUNS" "$DATA"; mkdir -p "$RUNS" "$DATA"
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
$PY scripts/carry_emoji.py unpack "$CARRY/$NAME/train" "$DATA" || exit 1
TRAIN="$PY -m ganvas.core.hosts.cli.train"
$TRAIN train-evaluator --data "$DATA" --out "$RUNS/evaluator" --epochs "$EPOCHS" --holdout-validation \
  --device "$DEVICE" > "$OUT/evaluator.log" 2>&1 || { tail -20 "$OUT/evaluator.log"; exit 1; }
tail -2 "$OUT/evaluator.log"

COMMON=(--data "$DATA" --resolution 64 --steps 1000000 --batch "$BATCH" --device "$DEVICE"
        --no-progress --holdout-validation --evaluator "$RUNS/evaluator" --val-every "$VAL_EVERY" --log-every "$LOG_EVERY"
        --sample-every 1000 --checkpoint-every 2000)
FORMS=(--caption-forms full:0.5,typed:0.35,name:0.15)
SWAPS=(--negatives random:0.4,style:0.3,concept:0.3)
FIXES=(--preset emoji --gp-augment --ema-images 20000)
if [ "$ABLATION" = "0" ]; then
  $TRAIN train "${COMMON[@]}" --max-minutes "$MINUTES" --out "$RUNS/B-forms" --preset lean "${FORMS[@]}" "${SWAPS[@]}" > "$RUNS/B.log" 2>&1
  tail -c 600 "$RUNS/B.log"
  cp "$RUNS/B-forms/model/model.safetensors" "$OUT/B-forms.safetensors"
  split -b 15M -d "$RUNS/B-forms/training_state.safetensors" "$OUT/B-state.part-"
  mv "$OUT/evaluator.log" "$RUNS/"  # 7 files back of the 8 allowed
  tar -C "$RUNS" -czf "$OUT/runs.tgz" --exclude training_state.safetensors --exclude model.safetensors .
  tail -n 1 "$RUNS/B-forms/stats.jsonl"; ls -la "$OUT"
  exit 0
fi
$TRAIN train "${COMMON[@]}" --max-minutes "$MINUTES" --out "$RUNS/A-control" --preset lean > "$OUT/A.log" 2>&1 &
$TRAIN train "${COMMON[@]}" --max-minutes "$MINUTES" --out "$RUNS/B-forms" --preset lean "${FORMS[@]}" "${SWAPS[@]}" > "$OUT/B.log" 2>&1 &
$TRAIN train "${COMMON[@]}" --max-minutes "$MINUTES" --out "$RUNS/C-full" "${FIXES[@]}" "${FORMS[@]}" "${SWAPS[@]}" > "$OUT/C.log" 2>&1 &
$TRAIN train "${COMMON[@]}" --max-minutes "$MINUTES" --out "$RUNS/D-noswaps" "${FIXES[@]}" "${FORMS[@]}" > "$OUT/D.log" 2>&1 &
sleep 60; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv || true
for r in A B C D; do tail -c 400 "$OUT/$r.log"; echo; done
wait
# Phase 2 (what shipped): the chosen run continues alone on the whole GPU (4-5x its shared speed), exactly
# where it stopped (--resume). Set RESUME_MINUTES=0 to skip it.
if [ "${RESUME_MINUTES:-3.3}" != "0" ]; then
  $TRAIN train "${COMMON[@]}" --max-minutes "${RESUME_MINUTES:-3.3}" --out "$RUNS/B-forms" --preset lean "${FORMS[@]}" "${SWAPS[@]}" \
    --resume > "$OUT/B2.log" 2>&1
fi
# At most 8 files come back: each run's weights alone, everything else (stats, grids, configs, logs) in one tarball.
# (The first session lost its tarball to that limit: logs go into the tarball, not beside it.)
for run in A-control B-forms C-full D-noswaps; do
  cp "$RUNS/$run/model/model.safetensors" "$OUT/$run.safetensors" 2>/dev/null || echo "no model for $run"
done
mv "$OUT"/*.log "$RUNS/" 2>/dev/null
tar -C "$RUNS" -czf "$OUT/runs.tgz" --exclude training_state.safetensors --exclude model.safetensors .
for run in A-control B-forms C-full D-noswaps; do tail -n 1 "$RUNS/$run/stats.jsonl"; done
ls -la "$OUT"
