#!/usr/bin/env bash
# Re-creates the bundled reference model: the small-cnn (conv32-conv64-fc128) trained on Fashion-MNIST's
# members split (50,000 training images; split seed 0) with Adam and a cosine learning-rate schedule, 10 epochs, seed 0. About 4 minutes on 2 CPU
# cores. Same seed, same CPU build of torch -> the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/modelsec train --arch small-cnn --data fashion-mnist --split-seed 0 --epochs 10 --batch-size 128 \
  --lr 1e-3 --lr-schedule cosine --seed 0 --overwrite \
  --out src/modelsec/models/weights/fashion-mnist-small-cnn.safetensors "$@"
