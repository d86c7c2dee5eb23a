#!/usr/bin/env bash
# Installs the Debian packages modelsec's demo and tests need, when they are missing:
#   dataset-fashion-mnist  (IDX files under /usr/share/datasets/fashion-mnist)
#   chromium, chromium-driver  (headless browser for the report test; skipped with --data-only)
set -euo pipefail
data_only=0
[ "${1:-}" = "--data-only" ] && data_only=1

FMNIST_DIR="${MODELSEC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
need=()
[ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] || need+=(dataset-fashion-mnist)
if [ "$data_only" = 0 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "modelsec: missing system packages: ${need[*]}" >&2
  echo "  apt-get is not available here; install them with your system's package manager," >&2
  echo "  or point MODELSEC_FASHION_MNIST_DIR at a folder with the Fashion-MNIST IDX files." >&2
  exit 2
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "modelsec: installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
