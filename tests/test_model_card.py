"""The model card: what a model file records, typed (modelsec.models.card).

``tests/data/model-cards/*.json`` hold the safetensors header and the provenance ``OUT.json`` that modelsec wrote
before the card existed (commit b76417e), with the command line (``argv``, run from the repository root with the
output paths relative to a scratch folder) and what it printed: ``train`` and ``harden`` with every defense on
digits, and ``harden --defense output-hardening --base`` of a trained file, the committed golden model and the
bundled model. They pin the file format: every such file must read with the same meaning and write back unchanged,
and the same commands must write the same keys and values today.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from modelsec.audits.compare import dp_claim, own_members, summarise
from modelsec.audits.reference_choice import choose_recipe
from modelsec.audits.reference_models import BuiltinRecipe
from modelsec.audits.runner import _resolve_data
from modelsec.cli.main import main as cli_main
from modelsec.core.errors import ModelLoadError
from modelsec.data import load_splits
from modelsec.defenses.training import TrainingConfig, train_and_save
from modelsec.models.adapters import LoadRequest
from modelsec.models.base import Capability
from modelsec.models.card import (
    BaseRecord,
    DataRecord,
    DefenseRecord,
    Guarantees,
    ModelCard,
    RunRecord,
    TrainingHistory,
    TrainingRecord,
)
from modelsec.models.loading import bundled_model_path, load_model, read_card
from modelsec.models.torch import read_safetensors_metadata, save_safetensors
from modelsec.models.zoo import build_architecture
from modelsec.results.audit import ModelInfo
from tests.report_fixtures import make_audit_result

ROOT = Path(__file__).parent.parent
CARDS = Path(__file__).parent / "data" / "model-cards"
FIXTURES = sorted(p.stem for p in CARDS.glob("*.json"))
GOLDEN_MODEL = Path(__file__).parent / "data" / "golden-digits-mlp.safetensors"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((CARDS / f"{name}.json").read_text(encoding="utf-8")))


def json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def full_card() -> ModelCard:
    """A card with every section: a rounding output over a PGD-AT model hardened from a file."""
    config = {"epochs": 2, "batch_size": 32, "lr": 0.001, "weight_decay": 0.0, "lr_schedule": "cosine", "seed": 4}
    history = TrainingHistory(
        config=config,
        train_loss=[1.5, 0.75],
        train_accuracy=[0.5, 0.75],
        test_accuracy=[0.25, 0.5],
        seconds=1.25,
        metrics={"pgd_accuracy": [0.125, 0.25]},
        events=[{"event": "collapse", "epoch": 2}],
        stop_reason="collapsed",
    )
    at = Guarantees(
        kind="empirical",
        summary="empirical robustness only",
        threat_model={"norm": "linf", "eps": 0.1},
        training_attack="pgd-7",
        details={"steps": 7},
    )
    return ModelCard(
        arch="mlp",
        input_shape=(64,),
        num_classes=10,
        bounds=(0.0, 1.0),
        class_names=tuple(str(d) for d in range(10)),
        data=DataRecord(source="digits", split_seed=3, members_used=500),
        training=TrainingRecord(config=config, history=history),
        output={"kind": "rounding", "decimals": 2},
        defense=DefenseRecord(
            name="output-hardening",
            config={"output": "rounding", "decimals": 2, **config},
            guarantees=Guarantees(kind="empirical", summary="rounded", details={"output": {"kind": "rounding"}}),
            base=BaseRecord(
                path="at.safetensors", sha256="ab" * 32, defense=DefenseRecord(name="pgd-at", guarantees=at)
            ),
        ),
        run=RunRecord(
            seed=4,
            data_sha256={"train": "cd" * 32, "test": "ef" * 32},
            training_seconds=1.25,
            epochs_completed=2,
            resumed_from_epoch=1,
            stop_reason="collapsed",
            device="cpu",
            created="2026-01-01T00:00:00+00:00",
            versions={"modelsec": "0.1.0", "torch": "2.13.0", "python": "3.11.2"},
            base_provenance={"seed": 0, "training": None},
            reports={"dp_sgd": {"epsilon": 2.5, "steps": [1, 2]}},
        ),
        modelsec_version="0.1.0",
    )


# ---------------------------------------------------------------- round trips


def test_a_card_round_trips_through_its_header_and_its_provenance() -> None:
    card = full_card()
    header = json_round_trip(card.to_header())
    assert list(header) == [
        "training", "arch", "input_shape", "num_classes", "bounds", "class_names", "data", "output", "defense",
    ]  # fmt: skip
    assert header["training"] == {"config": card.recipe}  # the recipe only: the history is the provenance's
    assert header["defense"]["base"]["defense"]["guarantees"]["threat_model"] == {"norm": "linf", "eps": 0.1}
    assert card.training is not None
    header_only = replace(card, training=replace(card.training, history=None), run=None, modelsec_version=None)
    assert ModelCard.from_header(header) == header_only

    provenance = json_round_trip(card.to_provenance())
    assert provenance["training"]["stop_reason"] == "collapsed" and provenance["dp_sgd"]["steps"] == [1, 2]
    assert provenance["guarantees"] == header["defense"]["guarantees"]  # repeated at the top, as harden always did
    assert {k: provenance[k] for k in header if k != "training"} == {k: v for k, v in header.items() if k != "training"}
    assert ModelCard.from_provenance(provenance) == card
    assert ModelCard.from_header({}) == ModelCard() and ModelCard().to_provenance() == {
        "arch": None, "input_shape": None, "num_classes": None, "bounds": None, "class_names": None, "data": None,
    }  # fmt: skip


def test_plain_training_drops_the_defense_and_the_run() -> None:
    card = full_card().as_plain_training()
    provenance = card.to_provenance()
    assert "defense" not in card.to_header() and card.guarantees is None
    assert next(iter(provenance)) == "training" and list(provenance)[-1] == "modelsec_version"
    assert not {"seed", "guarantees", "created", "versions", "dp_sgd", "base_provenance"} & set(provenance)


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ({"num_classes": "ten"}, "num_classes must be an integer, got 'ten'"),
        ({"num_classes": True}, "num_classes must be an integer, got True"),
        ({"input_shape": [1, "28"]}, "input_shape[1] must be an integer"),
        ({"bounds": [0.0]}, "bounds must be 2 values"),
        ({"data": "digits"}, "data must be an object"),
        ({"data": {"source": "digits", "members_used": 1.5}}, "data.members_used must be an integer"),
        ({"defense": {"config": {}}}, "defense lacks its field 'name'"),
        ({"defense": {"name": "x", "guarantees": {"kind": 3, "summary": ""}}}, "defense.guarantees.kind must be a str"),
        ({"training": {"config": [1, 2]}}, "training.config must be an object"),
        ({"output": "label-only"}, "output must be an object"),
    ],
)
def test_a_malformed_header_is_a_load_error_naming_the_key(tmp_path: Path, header: Any, named: str) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(named)):
        ModelCard.from_header(header, source="m.safetensors")
    path = tmp_path / "m.safetensors"
    save_safetensors(build_architecture("mlp", (8,), 3), path, {"arch": "mlp", "input_shape": [8], **header})
    with pytest.raises(ModelLoadError, match=f"'{re.escape(str(path))}' has a malformed modelsec header"):
        load_model(path, num_classes=3)
    with pytest.raises(ModelLoadError, match="malformed modelsec header"):
        read_card(path)


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    header = {
        "arch": "mlp",
        "input_shape": [8],
        "num_classes": 3,
        "adapter": {"kind": "from a later modelsec"},
        "data": {"source": "digits", "split_seed": 0, "members_used": 5, "hash": "abc"},
        "defense": {"name": "standard", "config": {}, "guarantees": {"kind": "none", "summary": "", "since": 2}},
    }
    card = ModelCard.from_header(header)
    assert card.data == DataRecord(source="digits", split_seed=0, members_used=5)
    assert card.guarantees == Guarantees(kind="none", summary="")
    path = tmp_path / "m.safetensors"
    save_safetensors(build_architecture("mlp", (8,), 3), path, header)
    assert load_model(path).card == card


# ---------------------------------------------------------------- files written before the card


def test_the_bundled_and_the_golden_model_read_as_they_always_did() -> None:
    bundled = read_safetensors_metadata(bundled_model_path())
    card = read_card(None)
    assert card.to_header() == bundled  # nothing lost, nothing added
    assert (card.arch, card.input_shape, card.num_classes, card.bounds) == ("small-cnn", (1, 28, 28), 10, (0.0, 1.0))
    assert card.data == DataRecord(source="fashion-mnist", split_seed=0, members_used=50000)
    assert card.training is None and card.defense is None and card.class_names is not None
    assert card.recipe == {}  # no recipe recorded: reference models train with the defaults
    sidecar = Path(str(bundled_model_path()) + ".json")
    provenance = ModelCard.from_provenance(json.loads(sidecar.read_text()), source=str(sidecar))
    assert provenance.run is None and provenance.modelsec_version == "0.1.0"
    assert provenance.training is not None and provenance.training.history is not None
    assert provenance.training.history.epochs == 10 and provenance.training.history.stop_reason is None

    golden = read_card(GOLDEN_MODEL)
    assert golden.to_header() == read_safetensors_metadata(GOLDEN_MODEL)
    assert golden.defense is not None and golden.defense.name == "standard" and golden.guarantees is not None
    assert golden.guarantees.kind == "none" and golden.recipe["batch_size"] == 32
    assert load_model(GOLDEN_MODEL).card == golden
    sidecar = Path(str(GOLDEN_MODEL) + ".json")
    golden_provenance = json.loads(sidecar.read_text())
    assert ModelCard.from_provenance(golden_provenance).to_provenance() == golden_provenance


@pytest.mark.parametrize("name", FIXTURES)
def test_files_written_before_the_card_read_and_write_back_unchanged(tmp_path: Path, name: str) -> None:
    """Each header and provenance written before the card reads into a card that writes them back equal (a
    provenance's keys in the same order, but for ``--base``'s, which took the header's sorted order)."""
    written = fixture(name)
    header, provenance = written["header"], written["provenance"]
    card = ModelCard.from_header(header, source=name)
    assert card.to_header() == header
    recorded = ModelCard.from_provenance(provenance, source=name)
    assert recorded.to_provenance() == provenance
    if not name.startswith("wrap-"):
        assert list(recorded.to_provenance()) == list(provenance)
    assert (recorded.defense, recorded.data) == (card.defense, card.data)

    # what it means: the loader wraps what the card says, the audit finds the data and the recipe it records
    assert card.arch is not None and card.input_shape is not None and card.num_classes is not None
    path = tmp_path / "m.safetensors"
    save_safetensors(build_architecture(card.arch, card.input_shape, card.num_classes), path, header)
    loaded = load_model(path)
    expected = {None: Capability.GRADIENTS, "label-only": Capability.LABELS, "top-k": Capability.SCORES}
    assert loaded.classifier.capability is expected.get((card.output or {}).get("kind"), Capability.SCORES)
    assert loaded.card == card and loaded.classifier.input_shape == card.input_shape
    assert card.data is not None and card.data.source is not None
    assert _resolve_data(None, card, None) == (card.data.source, card.data.split_seed)
    info = ModelInfo(path=None, sha256=None, arch=card.arch, format="safetensors", num_classes=10, input_shape=[64])
    recipe, _ = choose_recipe(
        arch_option=None, overrides=_audit_config().reference_overrides(), info=info, card=card, own=None,
        module=torch.nn.Identity(), request=LoadRequest(),
    )  # fmt: skip
    assert isinstance(recipe, BuiltinRecipe)
    assert recipe.training.epochs == card.recipe.get("epochs", TrainingConfig().epochs)


def test_compare_reads_the_defense_the_claim_and_the_training_time_from_old_files() -> None:
    splits = load_splits("digits", seed=0)
    result = make_audit_result()

    def row(name: str) -> Any:
        written = fixture(name)
        card = ModelCard.from_header(written["header"])
        provenance = ModelCard.from_provenance(written["provenance"])
        return summarise(result, name=name, path=None, baseline=False, card=card, provenance=provenance, splits=splits)

    dp = row("harden-dp-sgd")
    details = fixture("harden-dp-sgd")["header"]["defense"]["guarantees"]["details"]
    assert (dp.defense, dp.dp_epsilon, dp.dp_delta) == ("dp-sgd", details["epsilon"], 1e-5)
    assert dp.training_seconds == fixture("harden-dp-sgd")["provenance"]["training_seconds"]
    trained = row("train")  # plain training: no defense, the time from the history
    assert trained.defense is None and trained.dp_epsilon is None
    assert trained.training_seconds == fixture("train")["provenance"]["training"]["seconds"]
    wrapped = row("wrap-train")
    assert (wrapped.defense, wrapped.training_seconds, wrapped.defense_config["output"]) == (
        "output-hardening",
        0.0,
        "label-only",
    )
    few = row("train-members")  # another split seed, 100 members: both flagged
    assert any("split seed 4" in f for f in few.flags) and any("trained on 100 of the" in f for f in few.flags)
    assert dp_claim(ModelCard.from_header(fixture("harden-pgd-at")["header"]).guarantees) == (None, None)
    card = ModelCard.from_header(fixture("train-members")["header"])
    assert own_members(load_splits("digits", seed=4), card).members.x.shape[0] == 100


def _audit_config() -> Any:
    from modelsec.audits.runner import AuditConfig

    return AuditConfig(reference_models=0)


# ---------------------------------------------------------------- what the commands write today

_VOLATILE = {"created", "versions", "seconds", "training_seconds", "epoch_seconds"}
_ACCURACY = re.compile(r"test accuracy \d+\.\d\d%")


def _same(new: Any, old: Any, where: str = "") -> list[str]:
    """Where ``new`` differs from ``old``: keys (in order), strings and flags exactly, numbers within 1e-6 (the
    header's guarantees), volatile keys skipped."""
    if isinstance(old, dict):
        if not isinstance(new, dict) or list(new) != list(old):
            return [f"{where}: keys {list(new) if isinstance(new, dict) else new} vs {list(old)}"]
        return [d for k in old if k not in _VOLATILE for d in _same(new[k], old[k], f"{where}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(new, old, strict=True)) for d in _same(a, b, f"{where}[{i}]")]
    if isinstance(old, float) and isinstance(new, float):
        return [] if math.isclose(new, old, rel_tol=1e-6, abs_tol=1e-12) else [f"{where}: {new} vs {old}"]
    return [] if new == old else [f"{where}: {new!r} vs {old!r}"]


def _shape(value: Any) -> Any:
    """``value`` without its volatile keys and with every number replaced by its type (training numbers depend on
    the CPU's float order)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return value


def _relative_base(new: dict[str, Any], old: dict[str, Any], folder: Path) -> None:
    """A ``--base`` trained in ``folder`` recorded as the fixture names it (its path relative to the folder, its
    SHA-256 the fixture's: its bytes depend on the CPU's float order)."""
    base = new["defense"]["base"]
    if base["path"].startswith(f"{folder}/"):
        base["path"] = base["path"][len(f"{folder}/") :]
        base["sha256"] = old["defense"]["base"]["sha256"]


@pytest.mark.slow
def test_the_commands_write_what_they_wrote_before_the_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command of the fixtures but ``harden-dp-sgd-eps`` (whose noise calibration alone takes seconds; its
    file is written as ``harden-dp-sgd``'s), run again: the same header (numbers within 1e-6), the same provenance
    keys (in the same order, but for ``--base``'s) with the same non-numeric values, the same printed line (but for
    the test accuracy)."""
    monkeypatch.chdir(ROOT)  # the --base paths of the bundled and the golden model are relative to it
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it; restore afterwards
    rerun = [name for name in FIXTURES if name != "harden-dp-sgd-eps"]
    for name in sorted(rerun, key=lambda n: n.startswith("wrap-")):  # the bases first
        old = fixture(name)
        argv = [str(tmp_path / a) if a.endswith(".safetensors") and "/" not in a else a for a in old["argv"]]
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
            raise SystemExit(0)
        out = capsys.readouterr().out
        assert e.value.code in (0, None), name
        assert _ACCURACY.sub("", out.replace(f"{tmp_path}/", "")) == _ACCURACY.sub("", old["stdout"]), name
        weights = tmp_path / f"{name}.safetensors"
        header = read_safetensors_metadata(weights)
        provenance = json.loads(Path(f"{weights}.json").read_text())
        if name.startswith("wrap-"):
            _relative_base(header, old["header"], tmp_path)
            _relative_base(provenance, old["provenance"], tmp_path)
        else:
            assert list(provenance) == list(old["provenance"]), name
        assert _same(header, old["header"]) == [], name
        assert _shape(provenance) == _shape(old["provenance"]), name


def test_train_and_harden_standard_write_equivalent_models(tmp_path: Path) -> None:
    """``modelsec train`` is ``harden --defense standard``: the same weights for the same seed, the same header
    but for the defense, and of the provenance the keys train always wrote, with the same values."""
    import modelsec

    config = TrainingConfig(epochs=2, batch_size=64, lr=2e-3, seed=7)
    trained, hardened = tmp_path / "train.safetensors", tmp_path / "standard.safetensors"
    plain = train_and_save(data="digits", arch="mlp", out=trained, config=config, members=300)
    full = modelsec.harden("standard", data="digits", arch="mlp", out=hardened, config=config.__dict__, members=300)
    a, b = load_file(str(trained)), load_file(str(hardened))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    header, standard = read_safetensors_metadata(trained), read_safetensors_metadata(hardened)
    assert standard.pop("defense")["name"] == "standard" and header == standard
    assert list(plain) == ["training", "arch", "input_shape", "num_classes", "bounds", "class_names", "data",
                           "modelsec_version"]  # fmt: skip
    assert plain == json.loads(Path(f"{trained}.json").read_text())
    for key in plain:
        if key == "training":
            assert {**plain[key], "seconds": 0} == {**full[key], "seconds": 0}
        else:
            assert plain[key] == full[key], key
    assert not Path(f"{trained}.ckpt").exists() and not Path(f"{hardened}.ckpt").exists()
