"""Issue 13's done-when, on more samples: the same trained digits model (modelsec's ``mlp`` on the 64 features, and
its ``small-cnn`` on the same records as 1x8x8 images) written as modelsec safetensors, ``.pt2`` (torch.export),
``.onnx`` (TorchScript exporter, opset 17) and ``.keras`` (the equivalent Keras model, weights copied across
layouts: tests/model_zoo.py), each audited with the same seed under ``--preset standard``. Prints, per model and
format, the largest logit difference from the torch module on random inputs, the clean accuracy and the robust
accuracy per eps with their 95% intervals, and the audit's seconds; writes them to ``--out`` (JSON).

    .venv/bin/python benchmarks/formats.py --samples 100 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.model_zoo

from tests import model_zoo

from modelsec import audit
from modelsec.data import load_splits
from modelsec.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--eps", default="0.05,0.1")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--archs", default="mlp,small-cnn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "formats.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="modelsec-bench-keras-"))
    from modelsec.models.adapters.keras import import_keras

    keras = import_keras()
    eps = tuple(float(e) for e in args.eps.split(","))
    digits = load_splits("digits", seed=0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelsec-formats-") as tmp:
        for arch in args.archs.split(","):
            splits = digits if arch == "mlp" else model_zoo.as_images(digits, (1, 8, 8))
            module = model_zoo.trained(arch, splits, epochs=args.epochs, seed=args.seed)
            paths = model_zoo.write_all_formats(keras, module, arch, splits, Path(tmp) / arch)
            x = torch.rand((256, *splits.input_shape), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                reference = module(x)
            for fmt, path in paths.items():
                loaded = load_model(path, input_shape=splits.input_shape, num_classes=10)
                diff = float((loaded.classifier.predict_logits(x) - reference).abs().max())
                start = time.perf_counter()
                result = audit(
                    path,
                    splits,
                    eps=eps,
                    samples=args.samples,
                    preset=args.preset,
                    seed=args.seed,
                    membership_attacks=("loss-threshold",),
                    mia_samples=100,
                )
                seconds = time.perf_counter() - start
                r = result.robustness
                assert r is not None
                row = {
                    "arch": arch,
                    "format": fmt,
                    "logit_max_diff": diff,
                    "n": r.n,
                    "clean_accuracy": r.clean_accuracy,
                    "clean_ci": [r.clean_ci.low, r.clean_ci.high],
                    "robust_accuracy": r.robust_accuracy,
                    "robust_ci": {k: [v.low, v.high] for k, v in r.robust_ci.items()},
                    "seconds": seconds,
                }
                rows.append(row)
                robust = "  ".join(
                    f"eps {k}: {v:.3f} [{r.robust_ci[k].low:.3f}, {r.robust_ci[k].high:.3f}]"
                    for k, v in r.robust_accuracy.items()
                )
                print(
                    f"{arch:10s} {fmt:12s} max|dlogit| {diff:.1e}  clean {r.clean_accuracy:.3f} "
                    f"[{r.clean_ci.low:.3f}, {r.clean_ci.high:.3f}]  {robust}  {seconds:.0f} s",
                    flush=True,
                )
    for arch in {row["arch"] for row in rows}:
        mine = [row for row in rows if row["arch"] == arch]
        base = mine[0]
        same = all(
            row["clean_accuracy"] == base["clean_accuracy"]
            and all(base["robust_ci"][k][0] <= v <= base["robust_ci"][k][1] for k, v in row["robust_accuracy"].items())
            for row in mine
        )
        print(f"{arch}: same clean accuracy and robust accuracies within the intervals: {'met' if same else 'MISSED'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    Path(args.out).write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
