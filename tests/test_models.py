"""Model loading: format detection by content, the safe-loading policy, architectures, the Classifier wrapper."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError
from modelsec.core.seeding import seeded
from modelsec.models import Classifier, ModelFormat, build_architecture, detect_format, eval_mode, load_model
from modelsec.models.torch import save_safetensors


class _CreatesFile:
    """Unpickling this creates a file: the canonical malicious pickle."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.target, "w"))


def mlp(seed: int = 0) -> nn.Module:
    with seeded(seed):
        return build_architecture("mlp", (6,), 3)


def test_detects_formats_by_content_not_extension(tmp_path: Path) -> None:
    m = mlp()
    st = tmp_path / "weights.pt"  # safetensors under a misleading name
    save_safetensors(m, st, {"arch": "mlp"})
    assert detect_format(st) is ModelFormat.SAFETENSORS
    zipped = tmp_path / "model.safetensors"  # a torch.save zip under a misleading name
    torch.save(m.state_dict(), zipped)
    assert detect_format(zipped) is ModelFormat.TORCH_PICKLE
    raw = tmp_path / "model.bin"
    raw.write_bytes(pickle.dumps({"a": 1}))
    assert detect_format(raw) is ModelFormat.PICKLE
    ep = torch.export.export(m.eval(), (torch.zeros(2, 6),))
    torch.export.save(ep, tmp_path / "model.data")
    assert detect_format(tmp_path / "model.data") is ModelFormat.TORCH_EXPORT
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelLoadError, match="unrecognised"):
        detect_format(junk)
    with pytest.raises(ModelLoadError, match="does not exist"):
        detect_format(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("container", ["raw-pickle", "torch-save"])
@pytest.mark.parametrize("trust", [False, True])
def test_malicious_pickle_never_runs(tmp_path: Path, container: str, trust: bool) -> None:
    """A pickle that would create a file is refused; with --trust-model it is read with weights_only=True,
    which refuses it too. Either way the file is never created."""
    target = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(_CreatesFile(target)))
    else:
        torch.save({"w": _CreatesFile(target)}, path)
    assert not target.exists()
    with pytest.raises(UnsafeModelError):
        load_model(path, arch="mlp", input_shape=(6,), num_classes=3, trust_model=trust)
    assert not target.exists()


def test_trusted_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    m = mlp()
    path = tmp_path / "model.pth"
    torch.save(m.state_dict(), path)
    with pytest.raises(UnsafeModelError, match="--trust-model"):
        load_model(path, arch="mlp", input_shape=(6,), num_classes=3)
    loaded = load_model(path, arch="mlp", input_shape=(6,), num_classes=3, trust_model=True)
    x = torch.rand(4, 6)
    assert torch.allclose(loaded.classifier.predict_logits(x), m(x))
    assert loaded.info.format == "torch-pickle"


def test_safetensors_round_trip_with_metadata(tmp_path: Path) -> None:
    m = mlp()
    path = tmp_path / "m.safetensors"
    save_safetensors(m, path, {"arch": "mlp", "input_shape": [6], "num_classes": 3, "bounds": [-1.0, 1.0]})
    loaded = load_model(path)
    x = torch.rand(5, 6)
    assert torch.allclose(loaded.classifier.predict_logits(x), m(x))
    assert loaded.classifier.bounds == (-1.0, 1.0)
    assert loaded.info.arch == "mlp" and len(loaded.info.sha256 or "") == 64
    with pytest.raises(ConfigError, match="contradicts"):
        load_model(path, arch="small-cnn")
    with pytest.raises(ModelLoadError, match="classes"):
        load_model(path, num_classes=10)


def test_weights_only_file_needs_arch_and_matching_shapes(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_safetensors(mlp(), path, {})
    with pytest.raises(ConfigError, match="--arch"):
        load_model(path, input_shape=(6,), num_classes=3)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(path, arch="mlp", input_shape=(7,), num_classes=3)
    with pytest.raises(ConfigError, match="unknown architecture"):
        load_model(path, arch="resnet-9000", input_shape=(6,), num_classes=3)


def test_exported_program_with_fixed_batch(tmp_path: Path) -> None:
    m = mlp()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m.eval(), (torch.zeros(4, 6),)), path)
    loaded = load_model(path, num_classes=3)
    assert loaded.classifier.input_shape == (6,)
    x = torch.rand(11, 6, requires_grad=True)  # not a multiple of the exported batch of 4
    out = loaded.classifier.logits(x)
    assert torch.allclose(out, m(x), atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_exported_program_with_unsafe_pickled_part_is_refused(tmp_path: Path) -> None:
    """torch.export.load falls back to full unpickling for parts the safe loader refuses; modelsec checks first."""
    m = mlp()
    good = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m.eval(), (torch.zeros(2, 6),)), good)
    target = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(_CreatesFile(target), payload)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = payload.getvalue() if item.filename.endswith(".pt") else zin.read(item.filename)
            zout.writestr(item, data)
    with pytest.raises(UnsafeModelError, match="pickled part"):
        load_model(bad, num_classes=3)
    assert not target.exists()


def test_classifier_eval_mode_is_restored_and_queries_counted() -> None:
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    net.train()
    net[2].eval()  # a mixed state must come back exactly
    clf = Classifier(net, input_shape=(6,), num_classes=3)
    x = torch.rand(10, 6)
    a, b = clf.predict_logits(x, batch_size=3), clf.predict_logits(x)
    assert torch.allclose(a, b, atol=1e-6)  # dropout off during inference (batching changes only round-off)
    assert net.training and net[1].training and not net[2].training
    assert clf.queries == 20
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training


def test_classifier_rejects_wrong_outputs_and_shapes() -> None:
    clf = Classifier(nn.Linear(6, 4), input_shape=(6,), num_classes=3)
    from modelsec.core.errors import DataError

    with pytest.raises(DataError, match="expected logits"):
        clf.predict(torch.rand(2, 6))
    ok = Classifier(nn.Linear(6, 3), input_shape=(6,), num_classes=3)
    with pytest.raises(DataError, match="input shape"):
        ok.predict(torch.rand(2, 5))


def test_saturated_model_keeps_distinct_losses() -> None:
    """float32 softmax of a huge margin is exactly 1 (loss 0); the float64 log-softmax keeps losses distinct."""
    logits = torch.tensor([[60.0, 0.0], [70.0, 0.0]])

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[: x.shape[0]] + 0 * x.sum()

    clf = Classifier(Fixed(), input_shape=(1,), num_classes=2)
    assert torch.softmax(logits, 1)[0, 0] == 1.0
    loss = clf.loss_per_sample(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    assert loss[0] > loss[1] > 0


def test_architectures_build_for_their_inputs() -> None:
    cnn = build_architecture("small-cnn", (1, 28, 28), 10)
    assert sum(p.numel() for p in cnn.parameters()) == 421642
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="mlp"):
        build_architecture("small-cnn", (30,), 2)
    dp = build_architecture("dp-cnn", (1, 28, 28), 10)
    # Papernot et al. 2021's model: conv 16@8x8 (1,040) + conv 32@4x4 (8,224) + fc 512->32 (16,416) + fc 32->10 (330)
    assert sum(p.numel() for p in dp.parameters()) == 26010
    assert dp(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert build_architecture("dp-cnn", (3, 16, 16), 2)(torch.zeros(1, 3, 16, 16)).shape == (1, 2)
    with pytest.raises(ConfigError, match="16x16"):
        build_architecture("dp-cnn", (1, 15, 15), 2)


def test_same_seed_same_init_without_touching_global_rng() -> None:
    state = torch.random.get_rng_state()
    a, b = mlp(3), mlp(3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert os.environ.get("HOME")  # the isolated home fixture ran
