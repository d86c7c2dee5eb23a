"""``modelsec harden --base model.keras``: the user's Keras architecture trained from its initial weights with a
defense (adversarial training, DP-SGD) and saved as ``.keras`` with its card; DP-SGD's per-example gradients of a
Keras model checked against a slow one-record-at-a-time reference and against the same network in torch."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelsec.core.errors import ConfigError, DataError, UnsafeModelError
from modelsec.data import load_splits
from modelsec.data.user_split import SplitFiles, recorded_split_files
from modelsec.defenses import harden
from modelsec.models.adapters import keras as keras_adapter
from modelsec.models.loading import load_model, read_card

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _mlp(keras: Any, hidden: int = 16) -> Any:
    """The mission's shape on digits: records (64,) seen by the model as (8, 8), flattened, one hidden layer."""
    return keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> SplitFiles:
    """The user's own digits split as files: 256 training records, 200 held out."""
    folder = tmp_path_factory.mktemp("split")
    s = load_splits("digits")
    np.savez(folder / "members.npz", x=s.members.x[:256], y=s.members.y[:256])
    np.savez(folder / "nonmembers.npz", x=s.nonmembers.x[:200], y=s.nonmembers.y[:200])
    return SplitFiles(members=str(folder / "members.npz"), nonmembers=str(folder / "nonmembers.npz"))


@pytest.fixture(scope="module")
def base(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "base.keras"
    _mlp(keras).save(path)
    return path


def _layers(path: Path) -> list[dict[str, Any]]:
    """The layer configurations of a .keras archive, without the names Keras numbers per process and the ids of
    objects shared while saving."""
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k not in ("name", "shared_object_id")}
        return [plain(v) for v in value] if isinstance(value, list) else value

    layers: list[dict[str, Any]] = plain(config["config"]["layers"])
    assert [layer["class_name"] for layer in layers] == ["InputLayer", "Flatten", "Dense", "Dense"]
    return layers


def _weights(path: Path) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in load_model(path).classifier.module.parameters()]


DEFENSES = {
    "pgd-at": {"eps": 0.1, "steps": 3, "epochs": 2, "batch_size": 32},
    "dp-sgd": {"l2_norm_clip": 1.0, "noise_multiplier": 1.1, "epochs": 2, "batch_size": 32, "lr": 0.5},
}


@pytest.mark.parametrize("defense", sorted(DEFENSES))
def test_harden_keras_base(keras: Any, base: Path, split: SplitFiles, tmp_path: Path, defense: str) -> None:
    outs = [tmp_path / f"run{i}.keras" for i in (1, 2)]
    for out in outs:
        harden(defense, data=split, arch=None, base=base, out=out, config=DEFENSES[defense])
    first, second = (_weights(out) for out in outs)
    # the base's architecture, weights of their own, the same for the same seed
    assert _layers(outs[0]) == _layers(base)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, _weights(base), strict=True) if a.ndim == 2)
    loaded = load_model(outs[0])
    assert loaded.info.format == "keras" and loaded.classifier.num_classes == 10
    # the card, inside the archive and beside it, says what a later audit needs
    card = read_card(outs[0])
    assert card == loaded.card
    assert card.defense is not None and card.defense.name == defense
    assert card.arch == "keras:Sequential" and card.input_shape == (64,) and card.num_classes == 10
    assert card.recipe["epochs"] == 2 and card.recipe["batch_size"] == 32
    assert card.data is not None and card.data.members_used == 256 and card.data.files is not None
    assert recorded_split_files(card.data.files) == split
    provenance = json.loads(outs[0].with_name(outs[0].name + ".json").read_text())
    assert provenance["architecture_source"]["path"] == str(base)
    if defense == "dp-sgd":
        report = provenance["dp_sgd"]
        assert report["grad_sample_mode"] == "functorch" and report["l2_norm_clip"] == 1.0
        assert report["noise_multiplier"] == 1.1 and report["epsilon"] > 0
        assert report["steps"] == 2 * (256 // 32)


def test_recorded_split_checked(split: SplitFiles, tmp_path: Path) -> None:
    changed = tmp_path / "members.npz"
    changed.write_bytes(Path(split.members).read_bytes())
    files = {"members": {"path": str(changed), "sha256": "0" * 64}, "nonmembers": {"path": split.nonmembers}}
    with pytest.raises(DataError, match="has changed since the model was trained"):
        recorded_split_files(files)


def test_keras_base_with_lambda_refused(keras: Any, split: SplitFiles, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    payload = eval(f"lambda t: (open({str(canary)!r}, 'w').write('ran'), t)[1]")
    evil = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(payload), keras.layers.Dense(10)])
    evil.save(tmp_path / "evil.keras")
    canary.unlink(missing_ok=True)  # building the model ran it; harden must not
    with pytest.raises(UnsafeModelError, match="Lambda layer"):
        harden("pgd-at", data=split, arch=None, base=tmp_path / "evil.keras", out=tmp_path / "at.keras")
    assert not canary.exists()
    assert not (tmp_path / "at.keras").exists()


def test_output_suffix_follows_the_format(base: Path, split: SplitFiles, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"name --out \*\.keras"):
        harden("pgd-at", data=split, arch=None, base=base, out=tmp_path / "at.safetensors")
    with pytest.raises(ConfigError, match="written as safetensors"):
        harden("standard", data="digits", arch="mlp", out=tmp_path / "plain.keras")
    with pytest.raises(ConfigError, match="both name the architecture"):
        harden("pgd-at", data=split, arch="mlp", base=base, out=tmp_path / "at.keras")


def test_dp_sgd_refuses_batchnorm_by_name(keras: Any, split: SplitFiles, tmp_path: Path) -> None:
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(8), keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(10)]
    )
    model.save(tmp_path / "bn.keras")
    with pytest.raises(ConfigError, match="Keras layer 'bn' \\(BatchNormalization\\)"):
        harden("dp-sgd", data=split, arch=None, base=tmp_path / "bn.keras", out=tmp_path / "dp.keras")


@pytest.mark.numerics
def test_per_example_gradients_equal_one_record_at_a_time(keras: Any) -> None:
    module = keras_adapter.keras_module(keras_adapter.fresh_model(_mlp(keras, 8), 3), (64,))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand((6, 64), generator=gen), torch.randint(0, 10, (6,), generator=gen)
    grads, logits = keras_adapter.per_example_gradients(module, x, y)
    params = list(module.parameters())
    assert [g.shape for g in grads] == [(6, *p.shape) for p in params]
    for i in range(len(x)):  # the slow reference: one record, one backward pass
        module.zero_grad()
        out = module(x[i : i + 1])
        torch.nn.functional.cross_entropy(out, y[i : i + 1]).backward()
        torch.testing.assert_close(logits[i], out[0].detach(), rtol=1e-5, atol=1e-6)
        for p, g in zip(params, grads, strict=True):
            assert p.grad is not None
            torch.testing.assert_close(g[i], p.grad, rtol=1e-4, atol=1e-6)
    empty, _ = keras_adapter.per_example_gradients(module, x[:0], y[:0])
    assert [g.shape for g in empty] == [(0, *p.shape) for p in params]


@pytest.mark.numerics
def test_dp_step_on_keras_equals_the_same_network_in_torch(keras: Any) -> None:
    """One noiseless DP-SGD step with active clipping: the Keras model (per-example gradients from torch.func)
    and the same weights as torch layers (Opacus's own hooks) take the same step."""
    from modelsec.defenses.dp_sgd import DPSGDStep

    module = keras_adapter.keras_module(keras_adapter.fresh_model(_mlp(keras, 8), 1), (64,))
    dense = [layer for layer in module.model.layers if type(layer).__name__ == "Dense"]
    twin = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    with torch.no_grad():
        for linear, layer in zip((twin[0], twin[2]), dense, strict=True):
            linear.weight.copy_(torch.as_tensor(np.asarray(layer.kernel.numpy())).T)
            linear.bias.copy_(torch.as_tensor(np.asarray(layer.bias.numpy())))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand((12, 64), generator=gen), torch.randint(0, 10, (12,), generator=gen)
    for model, mode in ((module, "hooks"), (twin, "hooks")):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        with DPSGDStep(model, optimizer, l2_norm_clip=0.05, noise_multiplier=0.0, expected_batch_size=16,
                       grad_sample_mode=mode) as step:  # fmt: skip
            step(x, y)
            assert step.steps == 1
    torch.testing.assert_close(module(x), twin(x), rtol=1e-5, atol=1e-6)
