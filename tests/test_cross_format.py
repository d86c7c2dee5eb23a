"""Issue 13's done-when: the same trained model as modelsec safetensors, a ``torch.export`` program (``.pt2``), ONNX
and the equivalent Keras model (weights copied across layouts) gives the same logits and, audited with the same
seed, the same clean accuracy and robust accuracies within their confidence intervals. The test runs the ``quick``
preset (seconds); benchmarks/formats.py runs ``standard`` (minutes: see benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from modelsec import audit
from modelsec.data import load_splits
from modelsec.models.loading import load_model
from tests import model_zoo

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning",
        "ignore::torch.jit.TracerWarning",
    ),
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed"),
]


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["mlp", "small-cnn"])
def test_one_model_in_four_formats_audits_the_same(arch: str, keras: Any, tmp_path: Path) -> None:
    digits = load_splits("digits", seed=0)
    splits = digits if arch == "mlp" else model_zoo.as_images(digits, (1, 8, 8))
    module = model_zoo.trained(arch, splits, epochs=5)
    paths = model_zoo.write_all_formats(keras, module, arch, splits, tmp_path)

    x = torch.rand((32, *splits.input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = module(x)
    for fmt, path in paths.items():
        loaded = load_model(path, input_shape=splits.input_shape, num_classes=10)
        torch.testing.assert_close(loaded.classifier.predict_logits(x), reference, atol=1e-4, rtol=0, msg=fmt)

    options = {"eps": (0.05, 0.1), "samples": 60, "preset": "quick", "seed": 0}
    options |= {"membership_attacks": ("loss-threshold",), "mia_samples": 60}
    results = {fmt: audit(path, splits, **options) for fmt, path in paths.items()}  # type: ignore[arg-type]
    base = results["safetensors"].robustness
    assert base is not None and base.clean_accuracy > 0.8
    for fmt, result in results.items():
        r = result.robustness
        assert r is not None and result.model.format == {"pt2": "torch-export"}.get(fmt, fmt)
        assert r.clean_accuracy == base.clean_accuracy, fmt
        for eps, accuracy in r.robust_accuracy.items():
            low, high = base.robust_ci[eps].low, base.robust_ci[eps].high
            assert low <= accuracy <= high, (fmt, eps, accuracy, (low, high))
