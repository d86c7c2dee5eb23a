"""Membership-inference defenses: configs fail before training; DMP's student trains only on population records
against the teacher's soft labels; the regularised defense restores the epoch it chose; the output wrappers reveal
what they promise and no more, survive a save/load round trip with the right capability, and make an audit run
only the attacks the hardened API allows."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

import modelsec
from modelsec.audits.runner import AuditConfig, run_audit
from modelsec.cli.main import main as cli_main
from modelsec.core.errors import ConfigError, ModelLoadError
from modelsec.core.seeding import seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses import DEFENSES, DMP, Regularised, make_defense
from modelsec.defenses.training import TrainingState
from modelsec.models import Capability, load_model
from modelsec.models.output import PROBABILITY_FLOOR, LabelOnly, Rounding, TopK, harden_output
from modelsec.models.torch import read_safetensors_metadata
from modelsec.models.zoo import build_architecture

MEMBERSHIP_DEFENSES = ("dmp", "regularised", "output-hardening")


def blobs(n: int, seed: int, d: int = 8, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(classes, d))
    y = rng.integers(0, classes, n)
    x = np.clip(centers[y] + rng.normal(0, 0.15, (n, d)), 0, 1).astype(np.float32)
    return Dataset(name=f"blobs{seed}", x=x, y=y.astype(np.int64), num_classes=classes, bounds=(0.0, 1.0))


def blob_splits(n: int = 120) -> Splits:
    return Splits(source="blobs", seed=0, members=blobs(n, 0), nonmembers=blobs(n // 2, 1), population=blobs(n, 2))


def mlp(data: Dataset, seed: int = 0) -> nn.Module:
    with seeded(seed):
        return build_architecture("mlp", data.input_shape, data.num_classes)


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", seed=0)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("dmp", {"temperature": 0.0}, "dmp: temperature must be > 0"),
        ("dmp", {"selection": "random"}, "selection must be one of all, low-entropy"),
        ("dmp", {"selection": "low-entropy"}, "needs reference_size"),
        ("dmp", {"reference_size": 0}, "reference_size must be >= 1"),
        ("dmp", {"teacher_epochs": 0}, "teacher_epochs must be >= 1"),
        ("dmp", {"temperature": "2"}, "temperature must be float"),
        ("regularised", {"label_smoothing": 1.0}, "regularised: label_smoothing must be in [0, 1)"),
        ("regularised", {"max_gap": -0.1}, "max_gap must be in [0, 1]"),
        ("regularised", {"patience": -1}, "patience must be >= 0"),
        ("regularised", {"validation_size": 0}, "validation_size must be >= 1"),
        ("regularised", {"weight_decay": -1e-4}, "weight decay must be >= 0"),
        ("output-hardening", {"output": "noise"}, "output must be one of label-only, rounding, top-k"),
        ("output-hardening", {"output": "top-k", "k": 0}, "k must be >= 1"),
        ("output-hardening", {"output": "rounding", "decimals": 9}, "decimals must be from 1 to 6"),
        ("output-hardening", {"output": "label-only", "k": 3}, "k is an option of output 'top-k'"),
        ("output-hardening", {"output": "top-k", "decimals": 3}, "decimals is an option of output 'rounding'"),
        ("output-hardening", {"temperature": 2.0}, "output-hardening has no option 'temperature'"),
    ],
)
def test_bad_configs_fail_at_construction(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_defense(name, options)
    assert message in str(err.value)


def test_defaults_round_trip_and_honest_guarantees() -> None:
    assert set(MEMBERSHIP_DEFENSES) <= set(DEFENSES.names())
    for name in MEMBERSHIP_DEFENSES:
        d = make_defense(name)
        assert make_defense(name, json.loads(json.dumps(d.config.to_dict()))).config == d.config
        g = d.guarantees().to_dict()
        assert g["kind"] == "empirical" and g["certified"] is False and g["threat_model"] is None
        assert g["details"]["protects_against"] == "membership inference"
        assert g["details"]["differential_privacy"] is False and "no differential privacy" in g["summary"]
    dmp = make_defense("dmp").config
    assert (dmp.temperature, dmp.selection, dmp.reference_size, dmp.teacher_epochs) == (2.0, "all", None, None)  # type: ignore[attr-defined]
    reg = make_defense("regularised").config
    assert (reg.label_smoothing, reg.weight_decay, reg.max_gap, reg.patience, reg.validation_size) == (  # type: ignore[attr-defined]
        0.1, 5e-4, 0.05, 3, 1000,
    )  # fmt: skip
    assert "weights are not protected" in make_defense("output-hardening").guarantees().summary


# ---------------------------------------------------------------- dmp


class RecordingDMP(DMP):
    """DMP that records every student batch, its labels and the soft labels it was trained against."""

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.teacher: nn.Module | None = None

    def student_loss(self, teacher: nn.Module) -> Any:
        self.teacher = teacher
        inner = super().student_loss(teacher)

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
            self.batches.append((x.clone(), y.clone(), self.soft_labels(teacher, x)))
            return inner(m, x, y, g)

        return loss


def hashes(x: np.ndarray | torch.Tensor) -> set[bytes]:
    arr = x.numpy() if isinstance(x, torch.Tensor) else x
    return set(Dataset(name="h", x=arr, y=np.zeros(len(arr), np.int64), num_classes=2, bounds=(0, 1)).record_hashes())


def test_dmp_student_sees_only_population_records_and_the_teachers_soft_labels(digits: Splits) -> None:
    config = {"epochs": 8, "teacher_epochs": 6, "batch_size": 64, "lr": 3e-3, "temperature": 3.0}
    defense = RecordingDMP(config)
    defense.use_population(digits.population)
    student = mlp(digits.members)
    history = defense.fit(student, digits.members, test=digits.nonmembers)
    assert defense.teacher is not None and history.epochs == 8
    seen = torch.cat([b[0] for b in defense.batches])
    assert len(seen) == 8 * len(digits.population)  # every population record, each epoch
    assert hashes(seen) <= hashes(digits.population.x)
    assert not hashes(seen) & hashes(digits.members.x)
    with torch.no_grad():
        for x, y, soft in defense.batches:
            teacher_logits = defense.teacher(x)
            assert torch.equal(y, teacher_logits.argmax(1))  # the batch's labels are the teacher's, not the truth
            torch.testing.assert_close(soft, functional.softmax(teacher_logits / 3.0, dim=1))
    record = defense.provenance()["dmp"]
    assert record["reference"]["records"] == len(digits.population) and record["reference"]["source"] == "population"
    assert len(record["teacher_training"]["train_loss"]) == 6 and len(record["student_training"]["train_loss"]) == 8
    assert history.test_accuracy[-1] > 0.8  # the student learnt the task from soft labels alone


def test_dmp_low_entropy_selection_keeps_the_teachers_most_certain_records(digits: Splits) -> None:
    defense = RecordingDMP({"epochs": 1, "batch_size": 256, "selection": "low-entropy", "reference_size": 100})
    defense.use_population(digits.population)
    defense.fit(mlp(digits.members), digits.members)
    assert defense.teacher is not None
    seen = torch.cat([b[0] for b in defense.batches])
    assert len(seen) == 100
    with torch.no_grad():
        p = functional.softmax(defense.teacher(torch.from_numpy(digits.population.x)).double(), dim=1)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(1)
    expected = digits.population.x[np.argsort(entropy.numpy(), kind="stable")[:100]]
    assert hashes(seen) == hashes(expected)
    ref = defense.provenance()["dmp"]["reference"]
    assert ref["selection"] == "low-entropy" and ref["mean_teacher_entropy"] < ref["mean_population_entropy"]


def test_dmp_needs_population_records() -> None:
    data = blobs(60, 0)
    with pytest.raises(ConfigError, match="needs the data's population records"):
        make_defense("dmp", {"epochs": 1}).fit(mlp(data), data)
    d = make_defense("dmp", {"epochs": 1, "reference_size": 500})
    d.use_population(blobs(40, 2))
    with pytest.raises(ConfigError, match="reference_size 500 exceeds the 40 population records"):
        d.fit(mlp(data), data)


def test_dmp_through_harden_resumes_in_the_student_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsec.defenses import Checkpoint

    splits = blob_splits()
    config = {"epochs": 3, "teacher_epochs": 2, "batch_size": 32}
    whole = modelsec.harden("dmp", data=splits, arch="mlp", out=tmp_path / "whole.safetensors", config=config)
    save = Checkpoint.save

    def save_then_stop(self: Checkpoint, state: TrainingState) -> None:
        save(self, state)
        if state.extra.get("phase") == "student" and state.epoch == 1:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.safetensors"
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            modelsec.harden("dmp", data=splits, arch="mlp", out=out, config=config)
    with monkeypatch.context() as m:
        m.setattr(DMP, "teacher_config", lambda self: pytest.fail("the teacher was trained again"))
        resumed = modelsec.harden("dmp", data=splits, arch="mlp", out=out, config=config)
    assert resumed["resumed_from_epoch"] == 1
    a = load_model(out).classifier.module.state_dict()
    b = load_model(tmp_path / "whole.safetensors").classifier.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole["defense"]["guarantees"]["kind"] == "empirical"
    assert read_safetensors_metadata(out)["defense"]["name"] == "dmp"
    assert resumed["dmp"]["reference"] == whole["dmp"]["reference"] and whole["dmp"]["reference"]["records"] == 120
    for key in ("train_loss", "train_accuracy", "test_accuracy"):  # the teacher's history, from the checkpoint
        assert resumed["dmp"]["teacher_training"][key] == whole["dmp"]["teacher_training"][key]
    assert len(whole["dmp"]["teacher_training"]["train_loss"]) == 2 and whole["epochs_completed"] == 3


def test_regularised_through_harden_records_its_choice(tmp_path: Path) -> None:
    out = tmp_path / "reg.safetensors"
    info = modelsec.harden("regularised", data=blob_splits(), arch="mlp", out=out, config={"epochs": 3, "patience": 0})
    selected = info["regularised"]["selected"]
    gaps = info["training"]["metrics"]["generalisation_gap"]
    assert info["regularised"]["validation_records"] == 120 and len(gaps) == 3
    assert selected["generalisation_gap"] == gaps[selected["restored_epoch"] - 1]
    assert read_safetensors_metadata(out)["defense"]["config"]["label_smoothing"] == 0.1


# ---------------------------------------------------------------- regularised


class ScriptedGap(Regularised):
    """Regularised training whose (training, validation) accuracies after each epoch are scripted."""

    script: tuple[tuple[float, float], ...] = ()

    def measure(self, module: nn.Module, epoch: int) -> tuple[float, float]:
        return self.script[epoch - 1]


def snapshots_of(store: dict[int, dict[str, torch.Tensor]]) -> Any:
    def snapshot(state: TrainingState) -> None:
        if state.history.stop_reason is None and not state.history.events:
            store[state.epoch] = {k: v.clone() for k, v in state.module.state_dict().items()}

    return snapshot


def fit_scripted(
    script: tuple[tuple[float, float], ...], **options: Any
) -> tuple[Regularised, nn.Module, Any, dict[int, dict[str, torch.Tensor]]]:
    data = blobs(64, 0)
    defense = type("Scripted", (ScriptedGap,), {"script": script})({"batch_size": 32, **options})
    defense.use_population(blobs(40, 2))
    module = mlp(data)
    store: dict[int, dict[str, torch.Tensor]] = {}
    history = defense.fit(module, data, after_epoch=snapshots_of(store))
    return defense, module, history, store


def test_regularised_stops_on_the_gap_and_restores_the_chosen_epoch() -> None:
    script = ((0.80, 0.78), (0.90, 0.86), (0.97, 0.88), (0.99, 0.87), (1.0, 0.9), (1.0, 0.9))
    defense, module, history, store = fit_scripted(script, epochs=6, max_gap=0.05, patience=2)
    assert history.epochs == 4  # epochs 3 and 4 exceed the gap: two epochs without a better admissible one
    assert history.stop_reason is not None and "restored epoch 2" in history.stop_reason
    assert history.metrics["validation_accuracy"] == [0.78, 0.86, 0.88, 0.87]
    assert history.metrics["generalisation_gap"] == pytest.approx([0.02, 0.04, 0.09, 0.12])
    (event,) = history.events
    assert event["event"] == "early-stopping" and event["restored_epoch"] == 2 and event["within_max_gap"] is True
    assert event["validation_accuracy"] == 0.86
    assert all(torch.equal(module.state_dict()[k], store[2][k]) for k in store[2])
    assert defense.provenance()["regularised"]["selected"]["restored_epoch"] == 2


def test_regularised_without_an_admissible_epoch_restores_the_smallest_gap() -> None:
    script = ((0.9, 0.7), (0.95, 0.8), (0.99, 0.82))
    _, module, history, store = fit_scripted(script, epochs=3, max_gap=0.05, patience=0)
    assert history.epochs == 3 and history.stop_reason is None  # patience 0: all epochs, then the restore
    (event,) = history.events
    assert event["event"] == "best-epoch-restored" and event["restored_epoch"] == 2
    assert event["within_max_gap"] is False
    assert all(torch.equal(module.state_dict()[k], store[2][k]) for k in store[2])


def test_regularised_trains_with_label_smoothing_and_measures_on_population() -> None:
    data, population = blobs(64, 0), blobs(30, 2)
    defense = make_defense("regularised", {"epochs": 2, "batch_size": 32, "label_smoothing": 0.2})
    defense.use_population(population)
    module = mlp(data)
    history = defense.fit(module, data)
    assert isinstance(defense, Regularised) and len(defense.validation) == 30  # capped at the population
    assert hashes(defense.validation.x) <= hashes(population.x)
    x, y = torch.from_numpy(data.x[:8]), torch.from_numpy(data.y[:8])
    loss, _ = defense.batch_loss(module, x, y, torch.Generator())
    torch.testing.assert_close(loss, functional.cross_entropy(module(x), y, label_smoothing=0.2))
    assert len(history.metrics["generalisation_gap"]) == 2 and history.events[-1]["event"] == "best-epoch-restored"


# ---------------------------------------------------------------- output wrappers


def random_logits(n: int = 64, k: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 4


def test_top_k_keeps_the_order_and_the_top_probabilities_and_hides_the_rest() -> None:
    logits, k = random_logits(), 3
    p = logits.softmax(1)
    hardened = TopK(nn.Identity(), k=k)(logits)
    q = hardened.softmax(1)
    top = p.topk(k, dim=1)
    torch.testing.assert_close(q.gather(1, top.indices), top.values)  # the k largest, exactly and in order
    assert torch.equal(q.topk(k, dim=1).indices, top.indices)
    hidden = torch.ones_like(p, dtype=torch.bool).scatter_(1, top.indices, False)
    rest = q[hidden].view(len(p), -1)
    torch.testing.assert_close(rest, rest[:, :1].expand_as(rest))  # the hidden classes are indistinguishable
    torch.testing.assert_close(rest[:, 0], (1 - top.values.sum(1)) / (10 - k))
    # moving mass among the hidden classes changes nothing that is revealed
    shuffled = logits.clone()
    for i in range(len(p)):
        cols = hidden[i].nonzero().flatten()
        shuffled[i, cols] = logits[i, cols[torch.randperm(len(cols), generator=torch.Generator().manual_seed(i))]]
    torch.testing.assert_close(TopK(nn.Identity(), k=k)(shuffled), hardened)


def test_rounding_rounds_and_keeps_the_label() -> None:
    logits = random_logits()
    q = Rounding(nn.Identity(), decimals=2)(logits).exp().double()
    expected = torch.round(logits.double().softmax(1), decimals=2).clamp_min(PROBABILITY_FLOOR)
    torch.testing.assert_close(q, expected, rtol=1e-6, atol=0)
    assert torch.equal(q.argmax(1), logits.argmax(1))
    # 0.504 / 0.496 both round to 0.5: the tie goes to the model's own prediction, either way round
    for a, b in ((0.504, 0.496), (0.496, 0.504)):
        tied = torch.tensor([[math.log(a), math.log(b)]])
        out = Rounding(nn.Identity(), decimals=1)(tied)
        assert out.argmax(1).item() == tied.argmax(1).item()
        torch.testing.assert_close(out.exp(), torch.tensor([[0.5, 0.5]]))


def test_label_only_reveals_the_label_alone() -> None:
    logits = random_logits()
    out = LabelOnly(nn.Identity())(logits)
    assert torch.equal(out.argmax(1), logits.argmax(1))
    assert torch.equal(out, LabelOnly(nn.Identity())(logits * 0.01))  # the same labels: the same output
    assert out.unique().tolist() == pytest.approx([math.log(PROBABILITY_FLOOR), 0.0])


def test_output_specs_are_validated() -> None:
    for spec, message in [
        ({"kind": "blur"}, "unknown output hardening 'blur'"),
        ({"kind": "top-k"}, "unexpected parameters"),
        ({"kind": "top-k", "k": 0}, "k must be an integer >= 1"),
        ({"kind": "rounding", "decimals": 2.5}, "decimals must be an integer"),
        ({"kind": "label-only", "k": 1}, "unexpected parameters"),
        ({"k": 1}, "a 'kind' string"),
    ]:
        with pytest.raises(ConfigError, match=message):
            harden_output(nn.Identity(), spec)
    with pytest.raises(ConfigError, match="reveals every probability"):
        TopK(nn.Identity(), k=3).check_classes(3)


# ---------------------------------------------------------------- saved files


def test_label_only_round_trip_gives_a_labels_capability_classifier(tmp_path: Path) -> None:
    splits = blob_splits()
    out = tmp_path / "lo.safetensors"
    info = modelsec.harden("output-hardening", data=splits, arch="mlp", out=out, config={"epochs": 2})
    meta = read_safetensors_metadata(out)
    assert meta["output"] == {"kind": "label-only"} and meta["defense"]["name"] == "output-hardening"
    assert info["guarantees"]["details"]["output"] == {"kind": "label-only"}
    loaded = load_model(out)
    assert loaded.classifier.capability is Capability.LABELS and isinstance(loaded.classifier.module, LabelOnly)
    base = loaded.classifier.module.module
    x = torch.from_numpy(splits.nonmembers.x)
    assert torch.equal(loaded.classifier.predict(x), base(x).argmax(1))
    assert torch.equal(loaded.classifier.predict_logits(x), LabelOnly(base)(x).detach())


def test_hardening_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = blob_splits()
    base = tmp_path / "base.safetensors"
    modelsec.harden("standard", data=splits, arch="mlp", out=base, config={"epochs": 1}, members=50)
    out = tmp_path / "top2.safetensors"
    info = modelsec.harden(
        "output-hardening", data=splits, arch=None, out=out, config={"output": "top-k", "k": 2}, base=base
    )
    meta, base_meta = read_safetensors_metadata(out), read_safetensors_metadata(base)
    assert meta["output"] == {"kind": "top-k", "k": 2}
    assert meta["data"] == base_meta["data"] and meta["data"]["members_used"] == 50  # the base's own records
    assert meta["defense"]["base"]["defense"]["name"] == "standard" and info["training"] is None
    assert info["base_provenance"]["defense"]["name"] == "standard"
    plain, hardened = load_model(base).classifier, load_model(out).classifier
    assert hardened.capability is Capability.SCORES
    x = torch.from_numpy(splits.nonmembers.x)
    torch.testing.assert_close(hardened.predict_logits(x), TopK(plain.module, k=2)(x).detach())

    with pytest.raises(ConfigError, match="already hardens its output"):
        modelsec.harden("output-hardening", data=splits, arch=None, out=tmp_path / "x.safetensors", base=out)
    # a training defense takes --base as the architecture and trains it from its initial weights (issue 13)
    retrained = tmp_path / "retrained.safetensors"
    modelsec.harden("standard", data=splits, arch=None, out=retrained, config={"epochs": 1, "seed": 1}, base=base)
    assert read_safetensors_metadata(retrained)["arch"] == base_meta["arch"] == "mlp"
    assert not torch.equal(load_model(retrained).classifier.predict_logits(x), plain.predict_logits(x))
    with pytest.raises(ConfigError, match="reveals every probability"):
        modelsec.harden(
            "output-hardening", data=splits, arch=None, out=tmp_path / "x.safetensors", base=base,
            config={"output": "top-k", "k": 3},
        )  # fmt: skip

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    cli_out = tmp_path / "cli.safetensors"
    with pytest.raises(SystemExit) as e:
        cli_main(["harden", "--defense", "output-hardening", "--base", str(base), "--out", str(cli_out), "-q",
                  "--config-json", '{"output": "rounding", "decimals": 1}'])  # fmt: skip
        raise SystemExit(0)
    assert e.value.code in (0, None)
    assert read_safetensors_metadata(cli_out)["output"] == {"kind": "rounding", "decimals": 1}


def test_an_unknown_output_in_a_file_is_a_load_error(tmp_path: Path) -> None:
    from modelsec.models.torch import save_safetensors

    data = blobs(10, 0)
    path = tmp_path / "m.safetensors"
    meta = {"arch": "mlp", "input_shape": [8], "num_classes": 3, "output": {"kind": "blur"}}
    save_safetensors(mlp(data), path, meta)
    with pytest.raises(ModelLoadError, match="output hardening this modelsec cannot apply"):
        load_model(path)


# ---------------------------------------------------------------- audit


def test_audit_of_a_label_only_model_runs_only_what_labels_allow(tmp_path: Path, digits: Splits) -> None:
    base = tmp_path / "overfit.safetensors"
    modelsec.harden("standard", data=digits, arch="mlp", out=base, config={"epochs": 12, "lr": 3e-3}, members=200)
    hardened = tmp_path / "label-only.safetensors"
    modelsec.harden("output-hardening", data=digits, arch=None, out=hardened, base=base)
    config = AuditConfig(eps=(0.1,), samples=4, mia_samples=200, preset="quick", attacks=("fgsm",), checks=False)

    plain = run_audit(base, digits, config=config).result
    assert plain.privacy is not None and plain.robustness is not None
    assert "label-only" not in [a.attack for a in plain.privacy.attacks]
    assert [r.attack for r in plain.robustness.results] == ["fgsm"]

    labels = run_audit(hardened, digits, config=config).result
    assert labels.privacy is not None and labels.robustness is not None
    assert [a.attack for a in labels.privacy.attacks] == ["label-only"]
    assert [r.attack for r in labels.robustness.results] == ["hopskipjump"]  # decision-based only
    assert [s.attack for s in labels.robustness.skipped] == ["fgsm"]
    assert labels.robustness.clean_accuracy == plain.robustness.clean_accuracy  # the labels are unchanged


def test_a_scores_only_model_gets_square_when_its_plan_has_nothing_it_allows() -> None:
    from modelsec.audits.presets import build_attacks, preset_specs
    from modelsec.models import Classifier

    data = blobs(10, 0)
    clf = Classifier(TopK(mlp(data), k=1), input_shape=(8,), num_classes=3, capability=Capability.SCORES)
    attacks, skipped = build_attacks(preset_specs("quick"), clf, "linf")
    assert [a.name for a in attacks] == ["square"] and [s.attack for s in skipped] == ["apgd", "fgsm"]
    attacks, _ = build_attacks(preset_specs("standard"), clf, "linf")
    assert [a.name for a in attacks] == ["square"]  # the preset's own Square, not a second one
