#!/usr/bin/env bash
# Re-creates the bundled reference model: the small-cnn (conv32-conv64-fc128) trained on Fashion-MNIST's
# members split (50,000 training images; split seed 0) with Adam, 8 epochs, seed 0. About 3-4 minutes on 2 CPU
# cores. Same seed, same CPU build of torch -> the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/modelsec train --arch small-cnn --data fashion-mnist --split-seed 0 --epochs 8 --batch-size 128 \
  --lr 1e-3 --seed 0 --overwrite \
  --out src/modelsec/models/weights/fashion-mnist-small-cnn.safetensors "$@"
