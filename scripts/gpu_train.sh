#!/usr/bin/env bash
# One prepared GPU session: train the shapes and emoji64 models and the emoji evaluator side by side on one
# GPU, with the same `ganvas train` command as on the CPU. Inputs travel in carry/ (git-ignored):
#   carry/cache/text-embeddings/minilm.safetensors  caption embeddings computed beforehand on the CPU
#   carry/emoji64/train/                              the emoji64 training split
# Build carry/ on the CPU first (the GPU machine has no MiniLM weights):
#   mkdir -p carry/emoji64 && cp -r ../shared/data/emoji64/train carry/emoji64/
#   python -c "import json; from ganvas.core.datasets.folders import shapes_caption_bank as b, SHAPES_SAMPLE_CAPTIONS as g; \
#     from ganvas.core.text.encoder import EmbeddingCache as C; s, d = b(); \
#     rows = [json.loads(l) for l in open('carry/emoji64/train/metadata.jsonl')]; \
#     C('carry/cache/text-embeddings').lookup(sorted({t for _, t in s + d} | set(g) | {r['text'] for r in rows}))"
# Outputs (model folders, stats, sample grids, logs) come back as tarballs in $OUT.
set -u
MINUTES=${MINUTES:-6}; BATCH=${BATCH:-256}; SHAPES_SIZE=${SHAPES_SIZE:-200000}; EPOCHS=${EPOCHS:-40}
OUT=${OUT:-/tmp/ganvas-gpu-out}
mkdir -p "$OUT" /tmp/pkg
ln -sfn "$PWD" /tmp/pkg/ganvas
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1 GANVAS_CACHE="$PWD/carry/cache" HF_HUB_OFFLINE=1
RUNS=/tmp/ganvas-runs
rm -rf "$RUNS"; mkdir -p "$RUNS"
TRAIN="${PYTHON:-python3} -m ganvas.core.hosts.cli.train"
nvidia-smi -L || true
${PYTHON:-python3} -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

$TRAIN train --data shapes --out "$RUNS/shapes" --resolution 64 --steps 200000 --batch "$BATCH" --bf16 \
  --shapes-size "$SHAPES_SIZE" --workers 6 --max-minutes "$MINUTES" --no-progress --sample-every 1000 \
  --checkpoint-every 2000 > "$OUT/shapes.log" 2>&1 &
$TRAIN train --data carry/emoji64/train --out "$RUNS/emoji64" --resolution 64 --steps 200000 --batch "$BATCH" \
  --bf16 --max-minutes "$MINUTES" --no-progress --sample-every 1000 --checkpoint-every 2000 \
  > "$OUT/emoji64.log" 2>&1 &
$TRAIN train-evaluator --data carry/emoji64 --out "$RUNS/evaluator" --epochs "$EPOCHS" > "$OUT/evaluator.log" 2>&1 &
wait
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv || true
# At most 8 files of 16 MB come back: weights on their own, everything else of a run in one tarball.
for run in shapes emoji64; do
  cp "$RUNS/$run/model/model.safetensors" "$OUT/$run.model.safetensors"
  tar -C "$RUNS" -czf "$OUT/$run.tgz" --exclude training_state.safetensors --exclude model.safetensors "$run"
done
tar -C "$RUNS" -czf "$OUT/evaluator.tgz" evaluator
ls -la "$OUT"
