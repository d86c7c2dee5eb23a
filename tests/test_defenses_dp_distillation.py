"""The ``dp-sgd`` and ``distillation`` defenses: configs validated before training (DP-SGD's own validation reused),
``harden`` writing DP-SGD's epsilon and accountant values into the header and its full report into the provenance
(checked against accountants called here directly), CLI flags reaching the configs, and defensive distillation
doing what the literature says: a student whose softmax saturates at temperature 1, which modelsec's audit flags."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

import modelsec
from modelsec.audits import AuditConfig, run_audit
from modelsec.cli.main import main as cli_main
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses import DEFENSES, Checkpoint, make_defense
from modelsec.defenses.distillation import DefensiveDistillation, saturation
from modelsec.defenses.dp_sgd import DPSGD, DPSGDConfig, DPSGDDefenseConfig
from modelsec.defenses.training import TrainingState
from modelsec.models import Classifier
from modelsec.models.torch import read_safetensors_metadata
from modelsec.models.zoo import build_architecture

FEATURES, CLASSES = 8, 3
CENTERS = np.random.default_rng(0).random((CLASSES, FEATURES)).astype(np.float32)


def blobs(n: int, seed: int) -> Dataset:
    """Three well-separated Gaussian blobs in [0, 1]^8."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = np.clip(CENTERS[y] + 0.08 * rng.standard_normal((n, FEATURES)), 0, 1).astype(np.float32)
    return Dataset(name="blobs", x=x, y=y.astype(np.int64), num_classes=CLASSES, bounds=(0.0, 1.0))


def blob_splits(n: int = 256) -> Splits:
    return Splits(source="blobs", seed=0, members=blobs(n, 0), nonmembers=blobs(128, 1), population=blobs(128, 2))


@pytest.fixture
def cheap_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about wiring rather than the claim (the claim is checked against real accountants below)."""
    import modelsec.defenses.dp_sgd as dp_sgd

    monkeypatch.setattr(dp_sgd, "epsilon_prv", lambda *args, **kwargs: 1.0)
    monkeypatch.setattr(dp_sgd, "epsilon", lambda *args, **kwargs: 2.0)


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it; restore afterwards
    with pytest.raises(SystemExit) as e:
        cli_main(list(args))
        raise SystemExit(0)
    return int(e.value.code or 0)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("dp-sgd", {"num_microbatches": 3}, "dp-sgd: num_microbatches=3 is not supported"),
        ("dp-sgd", {"noise_multiplier": 1.0, "target_epsilon": 3.0}, "dp-sgd: give noise_multiplier or target_"),
        ("dp-sgd", {"noise_multiplier": -1.0}, "dp-sgd: noise_multiplier must be a finite number >= 0"),
        ("dp-sgd", {"l2_norm_clip": 0.0}, "dp-sgd: l2_norm_clip must be a finite number > 0"),
        ("dp-sgd", {"delta": 1.0}, "dp-sgd: delta must be in (0, 1)"),
        ("dp-sgd", {"optimizer": "rmsprop"}, "dp-sgd: optimizer must be one of sgd, adam"),
        ("dp-sgd", {"momentum": 1.0}, "dp-sgd: momentum must be in [0, 1)"),
        ("dp-sgd", {"grad_sample_mode": "functorch"}, "dp-sgd: grad_sample_mode must be one of"),
        ("dp-sgd", {"batchnorm": "keep"}, "dp-sgd: batchnorm must be one of"),
        ("dp-sgd", {"seed": -1}, "dp-sgd: seed must be an integer from 0 to 2**63 - 1, got -1"),
        ("dp-sgd", {"lr_schedule": "cosine"}, "dp-sgd: lr_schedule must be 'constant'"),
        ("dp-sgd", {"weight_decay": 1e-4}, "dp-sgd: weight_decay is not supported"),
        ("dp-sgd", {"l2_norm_clip": "1"}, "dp-sgd: l2_norm_clip must be float"),
        ("dp-sgd", {"eps": 0.1}, "dp-sgd has no option 'eps'"),
        ("distillation", {"temperature": 0.0}, "distillation: temperature must be > 0"),
        ("distillation", {"teacher_epochs": 0}, "distillation: teacher_epochs must be >= 1"),
        ("distillation", {"temperature": float("inf")}, "temperature must be a finite number"),
        ("distillation", {"l2_norm_clip": 1.0}, "distillation has no option 'l2_norm_clip'"),
    ],
)
def test_bad_configs_fail_at_construction(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_defense(name, options)
    assert message in str(err.value)


def test_defaults_round_trip_and_reuse_dpsgdconfig() -> None:
    assert {"dp-sgd", "distillation"} <= set(DEFENSES.names())
    for name in ("dp-sgd", "distillation"):
        d = make_defense(name)
        assert make_defense(name, json.loads(json.dumps(d.config.to_dict()))).config == d.config
        assert d.guarantees().certified is False
    dp = make_defense("dp-sgd", {"noise_multiplier": 1.3, "num_microbatches": 256})
    assert isinstance(dp, DPSGD) and isinstance(dp.config, DPSGDDefenseConfig)
    # the defaults are DPSGDConfig's
    assert dp.config.dp_config() == DPSGDConfig(noise_multiplier=1.3, num_microbatches=256)
    assert make_defense("dp-sgd").config.dp_config() == DPSGDConfig()
    before = dp.guarantees()
    assert before.kind == "differential-privacy" and before.details["epsilon"] is None
    assert make_defense("dp-sgd", {"noise_multiplier": 0}).guarantees().kind == "none"
    distill = make_defense("distillation")
    assert isinstance(distill, DefensiveDistillation)
    assert (distill.config.temperature, distill.config.teacher_epochs) == (100.0, None)  # type: ignore[attr-defined]
    g = distill.guarantees()
    assert g.kind == "none" and "no robustness guarantee" in g.summary and "Carlini & Wagner 2017" in g.summary
    assert "gradient masking" in g.details["broken_by"]


# ---------------------------------------------------------------- dp-sgd through harden


def test_dp_sgd_harden_records_epsilon_and_accountants(tmp_path: Path) -> None:
    """q = 16/256 over 16 counted steps: the header carries the claim and the accountants' values, the provenance
    the whole report; PRV, RDP and PLD are recomputed here from the recorded (sigma, q, steps), PLD straight from
    dp_accounting."""
    pytest.importorskip("opacus")
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.pld import PLDAccountant

    from modelsec.stats.accountants import epsilon_prv, epsilon_rdp

    out = tmp_path / "dp.safetensors"
    config = {"noise_multiplier": 1.1, "batch_size": 16, "epochs": 1, "lr": 0.1, "seed": 2}
    info = modelsec.harden("dp-sgd", data=blob_splits(), arch="mlp", out=out, config=config)

    meta = read_safetensors_metadata(out)["defense"]
    assert meta["name"] == "dp-sgd" and meta["config"]["noise_multiplier"] == 1.1
    g = meta["guarantees"]
    assert g["kind"] == "differential-privacy"
    d = g["details"]
    assert (d["sample_rate"], d["steps"], d["delta"], d["accountant"]) == (1 / 16, 16, 1e-5, "prv")
    assert d["sampling"] == "poisson" and d["adjacency"] == "add/remove-one record"
    assert d["epsilon"] == d["epsilons"]["prv"] and set(d["epsilons"]) == {"prv", "rdp", "pld"}
    assert "as implemented" in d["scope"] and "audit" in d["scope"]
    assert f"({d['epsilon']:.3g}, 1e-05)-differential privacy" in g["summary"] and "Poisson" in g["summary"]

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(1 / 16, dp_accounting.GaussianDpEvent(1.1)), 16
    )
    pld = PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(event)
    assert d["epsilons"]["pld"] == pytest.approx(pld.get_epsilon(1e-5), rel=1e-6)
    assert d["epsilon"] == pytest.approx(epsilon_prv(1.1, 1 / 16, 16, 1e-5), rel=1e-9)
    assert d["epsilons"]["rdp"] == pytest.approx(epsilon_rdp(1.1, 1 / 16, 16, 1e-5), rel=1e-9)
    assert d["epsilons"]["pld"] <= d["epsilon"] <= d["epsilons"]["pld"] + 0.02 < d["epsilons"]["rdp"]

    provenance = json.loads(Path(str(out) + ".json").read_text())
    assert provenance == json.loads(json.dumps(info))
    report = provenance["dp_sgd"]
    assert report["epsilon"] == d["epsilon"] and report["epsilons"] == d["epsilons"]
    assert (report["steps"], report["sample_rate"], report["dataset_size"]) == (16, 1 / 16, 256)
    assert report["config"]["noise_multiplier"] == 1.1 and report["assumptions"] == d["assumptions"]
    assert provenance["guarantees"] == g
    assert provenance["training"]["metrics"]["epsilon"] == [d["epsilon"]]
    assert provenance["training"]["metrics"]["steps"] == [16.0]
    assert provenance["epochs_completed"] == 1 and provenance["training_seconds"] > 0
    assert not Path(str(out) + ".ckpt").exists()
    assert modelsec.load_model(out).classifier.num_classes == CLASSES


def test_dp_sgd_without_noise_claims_nothing(cheap_accounting: None) -> None:
    pytest.importorskip("opacus")
    defense = make_defense("dp-sgd", {"noise_multiplier": 0, "batch_size": 32, "epochs": 1})
    with seeded(0):
        module = build_architecture("mlp", (FEATURES,), CLASSES)
    history = defense.fit(module, blobs(128, 0), test=blobs(64, 1))
    assert history.epochs == 1 and len(history.test_accuracy) == 1 and "epsilon" not in history.metrics
    g = defense.guarantees()
    assert g.kind == "none" and "no differential privacy guarantee" in g.summary
    assert defense.provenance()["dp_sgd"]["epsilon"] is None
    with pytest.raises(ConfigError, match="batch_size 256 exceeds the 128 training records"):
        make_defense("dp-sgd").check_data(blobs(128, 0))


def test_cli_dp_sgd_flags_reach_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cheap_accounting: None
) -> None:
    pytest.importorskip("opacus")
    data = tmp_path / "blobs.npz"
    d = blobs(300, 0)
    np.savez(data, x=d.x, y=d.y)
    out = tmp_path / "dp.safetensors"
    code = run_cli(
        monkeypatch, "harden", "--defense", "dp-sgd", "--data", str(data), "--arch", "mlp", "--out", str(out),
        "--l2-norm-clip", "0.5", "--noise-multiplier", "1.3", "--num-microbatches", "16", "--delta", "1e-4",
        "--batch-size", "16", "--epochs", "1", "--lr", "0.05", "--optimizer", "adam", "--momentum", "0",
        "--grad-sample-mode", "hooks", "--batchnorm", "refuse", "--seed", "3", "-q",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    config = read_safetensors_metadata(out)["defense"]["config"]
    expected = {
        "l2_norm_clip": 0.5, "noise_multiplier": 1.3, "num_microbatches": 16, "delta": 1e-4, "batch_size": 16,
        "epochs": 1, "lr": 0.05, "optimizer": "adam", "momentum": 0.0, "grad_sample_mode": "hooks",
        "batchnorm": "refuse", "seed": 3, "target_epsilon": None, "lr_schedule": "constant",
    }  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    report = json.loads(Path(str(out) + ".json").read_text())["dp_sgd"]
    assert (report["grad_sample_mode"], report["optimizer"], report["l2_norm_clip"]) == ("hooks", "adam", 0.5)

    for args, message in [
        (["--defense", "dp-sgd", "--num-microbatches", "3"], "num_microbatches=3 is not supported"),
        (["--defense", "dp-sgd", "--noise-multiplier", "-1"], "noise_multiplier must be a finite number >= 0"),
        (["--defense", "dp-sgd", "--noise-multiplier", "1", "--target-epsilon", "2"], "not both"),
        (["--defense", "dp-sgd", "--target-epsilon", "0"], "target_epsilon must be a finite number > 0"),
        (["--defense", "dp-sgd", "--l2-norm-clip", "0"], "l2_norm_clip must be a finite number > 0"),
        (["--defense", "dp-sgd", "--delta", "2"], "delta must be in (0, 1)"),
        (["--defense", "dp-sgd", "--optimizer", "rmsprop"], "optimizer must be one of"),
        (["--defense", "dp-sgd", "--lr-schedule", "cosine"], "lr_schedule must be 'constant'"),
        (["--defense", "dp-sgd", "--batch-size", "5000"], "batch_size 5000 exceeds the"),
        (["--defense", "pgd-at", "--l2-norm-clip", "1"], "pgd-at has no option 'l2_norm_clip'"),
        (["--defense", "distillation", "--temperature", "0"], "distillation: temperature must be > 0"),
        (["--defense", "distillation", "--noise-multiplier", "1"], "distillation has no option 'noise_multiplier'"),
    ]:
        code = run_cli(monkeypatch, "harden", "--data", str(data), "--out", str(tmp_path / "x.st"), "-q", *args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "x.st").exists()


# ---------------------------------------------------------------- defensive distillation


DISTILL = {"epochs": 15, "batch_size": 64, "lr": 1e-2}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", seed=0)


@pytest.fixture(scope="module")
def digits_models(digits: Splits) -> dict[str, nn.Module]:
    """A standard and a distilled (T=100) MLP on 600 digits members, the same recipe otherwise."""
    train = digits.members.subset(np.arange(600))
    models = {}
    for name, options in [("standard", {}), ("distillation", {"temperature": 100.0})]:
        with seeded(0):
            module = build_architecture("mlp", digits.input_shape, 10)
        make_defense(name, {**DISTILL, **options}).fit(module, train)
        models[name] = module.eval()
    return models


def test_distilled_student_saturates(digits: Splits, digits_models: dict[str, nn.Module]) -> None:
    """At temperature 1 the student's logits are far larger than the standard model's and its softmax saturates
    (top probability within 1e-6 of 1) on most test records, while its accuracy stays useful."""
    standard = saturation(digits_models["standard"], digits.nonmembers)
    distilled = saturation(digits_models["distillation"], digits.nonmembers)
    assert distilled["median_abs_max_logit"] > 20 * standard["median_abs_max_logit"], (standard, distilled)
    assert distilled["median_logit_margin"] > 10 * standard["median_logit_margin"]
    assert distilled["saturated_fraction"] > 0.9 > 0.3 > standard["saturated_fraction"], (standard, distilled)
    assert 1 - distilled["median_max_probability"] <= 1e-6 < 1 - standard["median_max_probability"]
    x, y = torch.from_numpy(digits.nonmembers.x), torch.from_numpy(digits.nonmembers.y)
    with torch.no_grad():
        logits = digits_models["distillation"](x)
        assert float((logits.argmax(1) == y).float().mean()) > 0.75
        # the cross-entropy input gradient of most records is exactly zero: nothing for a CE attack to follow
    xg = x[:200].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(functional.cross_entropy(digits_models["distillation"](xg), y[:200]), xg)
    assert float((grad.abs().amax(dim=1) == 0).float().mean()) > 0.5


def test_audit_flags_the_distilled_model(
    digits: Splits, digits_models: dict[str, nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """modelsec's audit flags the distilled model (zero input gradients: a saturated softmax), runs the black-box
    remedy, and finds it no more robust than the undefended model; the undefended model raises no such flag.
    The remedy's black-box attacks run at their test sizes."""
    import modelsec.audits.sanity as sanity
    from modelsec.attacks.evasion import EVASION_ATTACKS

    monkeypatch.setattr(
        sanity, "REMEDY_PARAMS", {name: dict(EVASION_ATTACKS.get(name).test_params) for name in sanity.BLACK_BOX}
    )
    config = AuditConfig(eps=(0.1,), samples=20, mia_samples=50, preset="quick", seed=0)
    robust = {}
    for name, module in digits_models.items():
        clf = Classifier(module, input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds)
        result = run_audit(clf, digits, config=config).result
        rob = result.robustness
        assert rob is not None
        robust[name] = rob.robust_accuracy["0.1"]
        flags = {f.check: f for f in rob.flags}
        if name == "standard":
            assert "zero-gradients" not in flags
            continue
        flag = flags["zero-gradients"]
        assert "saturates" in flag.message and flag.remedy is not None and "black-box" in flag.remedy
        assert {"square", "hopskipjump"} <= {r.attack for r in rob.results}
        assert "overestimated" in result.verdict.headline or all(f.resolved for f in rob.flags)
    assert robust["distillation"] <= robust["standard"] + 0.1, robust


SMALL = {"epochs": 2, "teacher_epochs": 3, "batch_size": 32, "temperature": 20.0, "seed": 1}


def test_distillation_harden_records_teacher_and_student(tmp_path: Path) -> None:
    out = tmp_path / "distilled.safetensors"
    info = modelsec.harden("distillation", data=blob_splits(), arch="mlp", out=out, config=SMALL)
    meta = read_safetensors_metadata(out)["defense"]
    assert meta["name"] == "distillation" and meta["config"]["temperature"] == 20.0
    assert meta["guarantees"]["kind"] == "none" and "gradient masking" in meta["guarantees"]["summary"]
    assert meta["guarantees"]["details"]["teacher_epochs"] == 3
    provenance = json.loads(Path(str(out) + ".json").read_text())
    assert provenance == json.loads(json.dumps(info))
    section = provenance["distillation"]
    assert section["temperature"] == 20.0 and section["deployed_temperature"] == 1.0
    assert len(section["teacher_training"]["train_loss"]) == 3 and len(section["student_training"]["train_loss"]) == 2
    assert section["student_training"]["train_loss"] == provenance["training"]["train_loss"]
    assert len(section["teacher_training"]["test_accuracy"]) == 3
    total = section["teacher_training"]["seconds"] + section["student_training"]["seconds"]
    assert provenance["training_seconds"] == pytest.approx(total)
    assert set(section["deployed"]) >= {"median_max_probability", "saturated_fraction", "median_logit_margin"}


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_at", [2, 4])  # inside the teacher (3 epochs), inside the student (2 epochs)
def test_distillation_resumes_in_either_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int) -> None:
    splits = blob_splits(128)
    modelsec.harden("distillation", data=splits, arch="mlp", out=tmp_path / "whole.st", config=SMALL)
    saves = []
    save = Checkpoint.save

    def save_then_stop(self: Checkpoint, state: TrainingState) -> None:
        save(self, state)
        saves.append(state.extra["phase"])
        if len(saves) == stop_at:
            raise Interrupted

    out = tmp_path / "resumed.st"
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "save", save_then_stop)
        with pytest.raises(Interrupted):
            modelsec.harden("distillation", data=splits, arch="mlp", out=out, config=SMALL)
    assert saves[-1] == ("teacher" if stop_at <= 3 else "student")
    resumed = modelsec.harden("distillation", data=splits, arch="mlp", out=out, config=SMALL)
    whole = json.loads((tmp_path / "whole.st.json").read_text())
    assert resumed["resumed_from_epoch"] == (stop_at if stop_at <= 3 else stop_at - 3)
    a = modelsec.load_model(out).classifier.module.state_dict()
    b = modelsec.load_model(tmp_path / "whole.st").classifier.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for stage in ("teacher_training", "student_training"):
        assert resumed["distillation"][stage]["train_loss"] == whole["distillation"][stage]["train_loss"]
