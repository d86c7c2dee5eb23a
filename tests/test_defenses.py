"""Defenses: configs fail before training, adversarial training buys robustness where standard training has none,
the catastrophic-overfitting check restores the best epoch, a resumed run equals an uninterrupted one, and
``harden`` / ``modelsec harden`` write models that load with their defense recorded.

The data: a toy problem where the robust and the standard solution differ (after Tsipras et al. 2019, "Robustness
May Be at Odds with Accuracy"): feature 0 carries the label with probability 0.75 but 0.8 apart, far outside any
eps-0.1 perturbation; 20 more features each carry it weakly (0.08 apart in the mean, noise 0.1). Together the weak
features give about 99% accuracy, but an L-inf perturbation of 0.1 flips every one of them. Standard training uses
them (clean ~99%, robust at eps 0.1 ~25%); adversarial training must use feature 0 (clean = robust ~78%).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import modelsec
from modelsec.attacks.base import ThreatModel
from modelsec.attacks.evasion import PGD
from modelsec.cli.main import main as cli_main
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import generator, seeded
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses import DEFENSES, FGSMRS, Checkpoint, FGSMRSConfig, make_defense
from modelsec.defenses.checkpoint import CHECKPOINT_FORMAT
from modelsec.defenses.training import TrainingState
from modelsec.models.base import Classifier
from modelsec.models.torch import read_safetensors_metadata
from modelsec.models.zoo import build_architecture

EPS = 0.1
WEAK = 20


def toy(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 2 * y - 1
    agree = np.where(rng.random(n) < 0.75, 1, -1)
    robust = 0.5 + 0.4 * s * agree
    weak = 0.5 + 0.08 * s[:, None] + rng.normal(0, 0.1, (n, WEAK))
    x = np.clip(np.concatenate([robust[:, None], weak], axis=1), 0, 1).astype(np.float32)
    return Dataset(name="toy", x=x, y=y.astype(np.int64), num_classes=2, bounds=(0.0, 1.0))


def toy_splits(n: int = 200) -> Splits:
    return Splits(source="toy", seed=0, members=toy(n, 0), nonmembers=toy(n // 2, 1), population=toy(n // 2, 2))


def mlp(seed: int = 0) -> nn.Module:
    with seeded(seed):
        return build_architecture("mlp", (WEAK + 1,), 2)


def clean_and_robust(module: nn.Module, data: Dataset) -> tuple[float, float]:
    clf = Classifier(module, input_shape=data.input_shape, num_classes=2, bounds=data.bounds)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    result = PGD(steps=20)(clf, x, y, ThreatModel("linf", EPS), generator=generator(0))
    return float((result.pred_clean == y).float().mean()), float(result.robust.float().mean())


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("pgd-at", {"eps": -0.1}, "pgd-at: eps must be > 0"),
        ("pgd-at", {"eps": 0.0}, "eps must be > 0"),
        ("pgd-at", {"steps": 0}, "pgd-at: steps must be >= 1"),
        ("pgd-at", {"step_size": -1}, "step_size must be > 0"),
        ("pgd-at", {"norm": "l3"}, "norm must be one of"),
        ("pgd-at", {"eps_warmup_epochs": 8}, "must be fewer than epochs"),
        ("pgd-at", {"epochs": 0}, "pgd-at: epochs must be >= 1"),
        ("pgd-at", {"lr_schedule": "step"}, "lr schedule must be"),
        ("pgd-at", {"beta": 6.0}, "pgd-at has no option 'beta'"),
        ("pgd-at", {"epochs": "3"}, "epochs must be int, got '3'"),
        ("pgd-at", {"random_start": 1}, "random_start must be bool"),
        ("pgd-at", {"steps": 2.5}, "steps must be int"),
        ("pgd-at", {"eps": float("nan")}, "eps must be a finite number"),
        ("trades", {"beta": -1.0}, "trades: beta must be >= 0"),
        ("fgsm-rs", {"on_collapse": "ignore"}, "on_collapse must be one of"),
        ("fgsm-rs", {"collapse_drop": 0.0}, "collapse_drop must be in (0, 1]"),
        ("fgsm-rs", {"check_samples": -1}, "check_samples must be >= 0"),
        ("standard", {"batch_size": 0}, "standard: batch size must be >= 1"),
        ("standard", {"eps": 0.1}, "standard has no option 'eps'"),
        ("no-such-defense", {}, "unknown defense 'no-such-defense'; known:"),
    ],
)
def test_bad_configs_fail_at_construction(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_defense(name, options)
    assert message in str(err.value)


def test_configs_defaults_round_trip_and_guarantees() -> None:
    assert {"standard", "pgd-at", "trades", "fgsm-rs"} <= set(DEFENSES.names())
    for name in ("standard", "pgd-at", "trades", "fgsm-rs"):
        d = make_defense(name)
        again = make_defense(name, json.loads(json.dumps(d.config.to_dict())))
        assert again.config == d.config
        g = d.guarantees().to_dict()
        assert g["certified"] is False
        if name == "standard":
            assert g["kind"] == "none" and g["threat_model"] is None
        else:
            assert g["kind"] == "empirical" and g["threat_model"] == {"norm": "linf", "eps": 0.1}
            assert "no certificate" in g["summary"]
    pgd = make_defense("pgd-at").config
    assert (pgd.steps, pgd.step_size, pgd.random_start, pgd.eps_warmup_epochs) == (7, None, True, 0)
    assert make_defense("trades").config.beta == 6.0  # type: ignore[attr-defined]
    assert make_defense("pgd-at", {"eps": 1}).config.eps == 1.0  # an int is a float option's number
    with pytest.raises(ConfigError, match="takes a PGDATConfig"):
        make_defense("pgd-at", FGSMRSConfig())


def test_eps_checked_against_the_data_bounds(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    with pytest.raises(ConfigError, match="covers the whole input range"):
        modelsec.harden("pgd-at", data=toy_splits(40), arch="mlp", out=out, config={"eps": 1.5})
    assert not out.exists() and not Path(str(out) + ".ckpt").exists()


def test_eps_warmup_schedule() -> None:
    c = make_defense("pgd-at", {"eps": 0.3, "epochs": 5, "eps_warmup_epochs": 2}).config
    assert [round(c.eps_at(e), 6) for e in range(5)] == [0.1, 0.2, 0.3, 0.3, 0.3]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- robustness


def test_adversarial_training_is_robust_where_standard_training_is_not() -> None:
    train, test = toy(400, 0), toy(200, 1)
    common = {"epochs": 15, "batch_size": 100, "lr": 4e-3}
    results = {}
    for name, options in [
        ("standard", {}),
        ("pgd-at", {"eps": EPS, "steps": 5}),
        ("trades", {"eps": EPS, "steps": 5}),
        ("fgsm-rs", {"eps": EPS, "check_samples": 128}),
    ]:
        module = mlp()
        history = make_defense(name, {**common, **options}).fit(module, train, test=test)
        assert history.epochs == 15 and history.stop_reason is None
        results[name] = clean_and_robust(module, test)
    clean, robust = results["standard"]
    assert clean > 0.9 and robust < 0.45, results  # accurate through the weak features, and not robust
    for name in ("pgd-at", "trades", "fgsm-rs"):
        assert results[name][1] > 0.7 and results[name][1] > robust + 0.3, results


# ---------------------------------------------------------------- catastrophic overfitting


class ScriptedCheck(FGSMRS):
    """FGSM-RS whose check reports scripted PGD accuracies: a collapse injected at a known epoch."""

    script = (0.6, 0.7, 0.3, 0.8)

    def check_accuracy(self, module: nn.Module, epoch: int) -> tuple[float, float]:
        return 0.9, self.script[epoch - 1]


def test_catastrophic_overfitting_restores_the_best_epoch_and_stops() -> None:
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(state: TrainingState) -> None:
        if state.history.stop_reason is None:
            snapshots[state.epoch] = {k: v.clone() for k, v in state.module.state_dict().items()}

    module = mlp()
    defense = ScriptedCheck({"epochs": 4, "batch_size": 64, "eps": EPS, "check_samples": 32})
    history = defense.fit(module, toy(200, 0), after_epoch=snapshot)
    assert history.epochs == 3  # stopped after the collapse at epoch 3
    assert history.metrics["check_pgd_accuracy"] == [0.6, 0.7, 0.3]
    assert history.stop_reason is not None and "catastrophic overfitting at epoch 3" in history.stop_reason
    assert "restored epoch 2" in history.stop_reason
    (event,) = history.events
    assert event == {
        "epoch": 3,
        "event": "catastrophic-overfitting",
        "check_pgd_accuracy": 0.3,
        "best_epoch": 2,
        "best_check_pgd_accuracy": 0.7,
        "action": "restore-and-stop",
        "restored_epoch": 2,
    }
    assert same_weights(module.state_dict(), snapshots[2])

    recorded = ScriptedCheck({"epochs": 4, "batch_size": 64, "eps": EPS, "check_samples": 32, "on_collapse": "record"})
    history = recorded.fit(mlp(), toy(200, 0))
    assert history.epochs == 4 and history.stop_reason is None and len(history.events) == 1


def test_a_real_collapse_of_pgd_accuracy_is_caught() -> None:
    """Plain FGSM training (no random start) on the toy problem: PGD accuracy on the check records falls from
    its best by more than 20 points within a few epochs; the check restores the best weights, whose PGD accuracy
    is then measured again."""
    config = {"epochs": 10, "batch_size": 64, "lr": 3e-3, "eps": EPS, "random_start": False, "check_samples": 256}
    defense = make_defense("fgsm-rs", config)
    module = mlp()
    history = defense.fit(module, toy(400, 0))
    assert history.stop_reason is not None, history.metrics
    (event,) = history.events
    pgd = history.metrics["check_pgd_accuracy"]
    assert event["check_pgd_accuracy"] == pgd[-1] < max(pgd) - 0.2
    assert isinstance(defense, FGSMRS)
    _, again = defense.check_accuracy(module, event["restored_epoch"])
    assert again == pytest.approx(max(pgd))


# ---------------------------------------------------------------- harden, checkpoints


HARDEN = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "eps": EPS, "check_samples": 64}


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epochs: int) -> None:
    """Make the checkpoint writer raise right after saving epoch ``epochs``: a run killed there."""
    save = Checkpoint.save

    def save_then_stop(self: Checkpoint, state: TrainingState) -> None:
        save(self, state)
        if state.epoch == epochs:
            raise Interrupted

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = toy_splits()
    whole = modelsec.harden("fgsm-rs", data=splits, arch="mlp", out=tmp_path / "whole.safetensors", config=HARDEN)
    assert not (tmp_path / "whole.safetensors.ckpt").exists()

    out = tmp_path / "resumed.safetensors"
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        with pytest.raises(Interrupted):
            modelsec.harden("fgsm-rs", data=splits, arch="mlp", out=out, config=HARDEN)
    ckpt = tmp_path / "resumed.safetensors.ckpt"
    assert ckpt.exists() and not out.exists()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["format"] == CHECKPOINT_FORMAT and saved["state"]["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "order_generator", "batch_generator", "history", "extra"} <= set(
        saved["state"]
    )

    resumed = modelsec.harden("fgsm-rs", data=splits, arch="mlp", out=out, config=HARDEN)
    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] is None
    assert not ckpt.exists()
    a = modelsec.load_model(out).classifier.module.state_dict()
    b = modelsec.load_model(tmp_path / "whole.safetensors").classifier.module.state_dict()
    assert same_weights(a, b)
    for key in ("train_loss", "train_accuracy", "test_accuracy", "metrics"):
        assert resumed["training"][key] == whole["training"][key], key


def test_interrupted_dp_sgd_resumes_to_the_same_model_and_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DP-SGD checkpoints like the other defenses: the resumed run takes the same batches, noise and steps."""
    pytest.importorskip("opacus")
    splits = toy_splits()
    config = {"noise_multiplier": 1.0, "batch_size": 32, "epochs": 3, "seed": 0}
    whole = modelsec.harden("dp-sgd", data=splits, arch="mlp", out=tmp_path / "whole.safetensors", config=config)
    out = tmp_path / "resumed.safetensors"
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        with pytest.raises(Interrupted):
            modelsec.harden("dp-sgd", data=splits, arch="mlp", out=out, config=config)
    assert torch.load(tmp_path / "resumed.safetensors.ckpt", weights_only=True)["state"]["epoch"] == 1
    resumed = modelsec.harden("dp-sgd", data=splits, arch="mlp", out=out, config=config)
    assert resumed["resumed_from_epoch"] == 1 and not (tmp_path / "resumed.safetensors.ckpt").exists()
    a = modelsec.load_model(out).classifier.module.state_dict()
    b = modelsec.load_model(tmp_path / "whole.safetensors").classifier.module.state_dict()
    assert same_weights(a, b)
    for key in ("epsilon", "epsilons", "steps", "noise_multiplier"):
        assert resumed["dp_sgd"][key] == whole["dp_sgd"][key], key
    assert resumed["training"]["train_loss"] == whole["training"]["train_loss"]


def test_checkpoint_of_another_run_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = toy_splits()
    out = tmp_path / "m.safetensors"
    config = {"epochs": 3, "batch_size": 32, "lr": 3e-3}
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        with pytest.raises(Interrupted):
            modelsec.harden("pgd-at", data=splits, arch="mlp", out=out, config=config)
    with pytest.raises(ConfigError, match=r"checkpoint of a different run \(it differs in config\.lr\)"):
        modelsec.harden("pgd-at", data=splits, arch="mlp", out=out, config={**config, "lr": 1e-3})
    with pytest.raises(ConfigError, match=r"data_sha256\.train"):
        modelsec.harden("pgd-at", data=splits, arch="mlp", out=out, members=150, config=config)
    info = modelsec.harden("pgd-at", data=splits, arch="mlp", out=out, config={**config, "lr": 1e-3}, resume=False)
    assert info["resumed_from_epoch"] is None and info["epochs_completed"] == 3
    assert not Path(str(out) + ".ckpt").exists()


def test_unreadable_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    Path(str(out) + ".ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read the checkpoint"):
        modelsec.harden("standard", data=toy_splits(40), arch="mlp", out=out, config={"epochs": 1})


def test_harden_writes_a_loadable_model_with_its_defense(tmp_path: Path) -> None:
    splits = toy_splits()
    out = tmp_path / "at.safetensors"
    config = {"epochs": 2, "batch_size": 32, "eps": EPS, "steps": 3, "seed": 5}
    info = modelsec.harden("pgd-at", data=splits, arch="mlp", out=out, config=config)
    meta = read_safetensors_metadata(out)
    assert meta["defense"]["name"] == "pgd-at"
    assert meta["defense"]["config"]["eps"] == EPS and meta["defense"]["config"]["steps"] == 3
    assert meta["defense"]["guarantees"]["threat_model"] == {"norm": "linf", "eps": EPS}
    assert meta["arch"] == "mlp" and meta["data"] == {"source": "toy", "split_seed": 0, "members_used": 200}

    loaded = modelsec.load_model(out)
    assert loaded.classifier.num_classes == 2 and loaded.classifier.input_shape == (WEAK + 1,)
    provenance = json.loads(Path(str(out) + ".json").read_text())
    assert provenance == json.loads(json.dumps(info))
    assert provenance["seed"] == 5 and provenance["defense"]["name"] == "pgd-at"
    assert provenance["data_sha256"]["train"] == splits.members.sha256()
    assert provenance["training_seconds"] > 0 and len(provenance["training"]["train_loss"]) == 2
    assert "no certificate" in provenance["guarantees"]["summary"]
    assert set(provenance["versions"]) >= {"modelsec", "torch"}
    with pytest.raises(ConfigError, match="--overwrite"):
        modelsec.harden("pgd-at", data=splits, arch="mlp", out=out, config=config)
    modelsec.harden("standard", data=splits, arch="mlp", out=out, config={"epochs": 1}, overwrite=True)
    assert read_safetensors_metadata(out)["defense"]["guarantees"]["kind"] == "none"


# ---------------------------------------------------------------- command line


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it; restore afterwards
    with pytest.raises(SystemExit) as e:
        cli_main(list(args))
        raise SystemExit(0)
    return int(e.value.code or 0)


def test_cli_harden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "toy.npz"
    d = toy(240, 0)
    np.savez(data, x=d.x, y=d.y)
    out = tmp_path / "m.safetensors"
    code = run_cli(
        monkeypatch, "harden", "--defense", "trades", "--data", str(data), "--arch", "mlp", "--out", str(out),
        "--config-json", '{"steps": 2, "beta": 3}', "--epochs", "2", "--eps", "0.05", "--batch-size", "32",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"saved {out}" in captured.out and "trades" in captured.out
    meta = read_safetensors_metadata(out)["defense"]
    assert meta["name"] == "trades" and meta["config"]["beta"] == 3.0 and meta["config"]["eps"] == 0.05
    assert meta["config"]["epochs"] == 2 and meta["config"]["steps"] == 2

    for args, message in [
        (["--defense", "pgd-at", "--eps", "-1"], "pgd-at: eps must be > 0"),
        (["--defense", "pgd-at", "--beta", "2"], "pgd-at has no option 'beta'"),
        (["--defense", "pgd-at", "--config-json", "{nope"], "--config-json is not valid JSON"),
        (["--defense", "pgd-at", "--config-json", "[1]"], "must be a JSON object"),
        (["--defense", "nope"], "unknown defense 'nope'"),
        (["--defense", "standard", "--overwrite", "--members", "0"], "--members must be >= 1, got 0"),
        (["--defense", "standard"], "--overwrite"),
    ]:
        code = run_cli(monkeypatch, "harden", "--data", str(data), "--out", str(out), "-q", *args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)

    assert run_cli(monkeypatch, "list", "defenses") == 0
    assert "pgd-at" in capsys.readouterr().out
