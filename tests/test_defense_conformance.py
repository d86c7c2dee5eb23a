"""Conformance of every registered defense, driven by the registry (a new one is tested by registering it).

For every defense in :data:`DEFENSES`: each option of its config refuses a bad value (a wrong type, NaN, -1) with a
:class:`ConfigError` that names the defense, and ``harden`` refuses it before any data is loaded or any file
written; a tiny run (a small MLP, two epochs, the defense's own ``test_params``) trains, writes a model that loads
and returns its provenance with the defense's guarantees; the same seed gives the same weights and another seed
other weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import modelsec
from modelsec.core.errors import ConfigError
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses import DEFENSES, make_defense

TINY = {"epochs": 2, "batch_size": 32}
GUARANTEE_KINDS = {"none", "empirical", "certified", "differential-privacy"}
BAD_VALUES = (-1, [1], math.nan)  # every option refuses each: a wrong type, not a finite number, out of range


def blobs(n: int, seed: int, d: int = 8, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(classes, d))
    y = rng.integers(0, classes, n)
    x = np.clip(centers[y] + rng.normal(0, 0.15, (n, d)), 0, 1).astype(np.float32)
    return Dataset(name=f"blobs{seed}", x=x, y=y.astype(np.int64), num_classes=classes, bounds=(0.0, 1.0))


def tiny_splits() -> Splits:
    return Splits(source="blobs", seed=0, members=blobs(160, 0), nonmembers=blobs(64, 1), population=blobs(96, 2))


def tiny_config(name: str, **options: Any) -> dict[str, Any]:
    return {**TINY, **DEFENSES.get(name).test_params, **options}


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_option_refuses_a_bad_value_by_name(name: str) -> None:
    config_class = DEFENSES.get(name).config_class
    for field in dataclasses.fields(config_class):
        for bad in BAD_VALUES:
            with pytest.raises(ConfigError) as err:
                make_defense(name, {field.name: bad})
            message = str(err.value)
            assert message.startswith(f"{name}: "), message
            if bad != -1:  # wrong types and NaN: the option's own name (a range check may say it in words)
                assert field.name in message, message
    with pytest.raises(ConfigError, match=f"{name} has no option 'no_such_option'"):
        make_defense(name, {"no_such_option": 1})


@pytest.mark.parametrize("name", DEFENSES.names())
def test_harden_refuses_a_bad_option_before_loading_data(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelsec.data

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr(modelsec.data, "load_splits", no_data)
    first = dataclasses.fields(DEFENSES.get(name).config_class)[0].name
    with pytest.raises(ConfigError, match=name):
        modelsec.harden(name, data="digits", arch="mlp", out=tmp_path / "m.safetensors", config={first: [1]})
    assert not any(tmp_path.iterdir())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return modelsec.load_model(path).classifier.module.state_dict()


@pytest.mark.parametrize("name", DEFENSES.names())
def test_a_tiny_run_trains_a_model_with_its_guarantees_and_the_seed_decides_the_weights(
    name: str, tmp_path: Path
) -> None:
    splits = tiny_splits()

    def run(seed: int, out: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        path = tmp_path / out
        provenance = modelsec.harden(name, data=splits, arch="mlp", out=path, config=tiny_config(name, seed=seed))
        return provenance, weights(path)

    provenance, first = run(3, "a.safetensors")
    assert provenance["defense"]["name"] == name
    assert provenance["defense"]["config"] == make_defense(name, tiny_config(name, seed=3)).config.to_dict()
    assert 1 <= provenance["epochs_completed"] <= TINY["epochs"]
    guarantees = provenance["guarantees"]
    assert guarantees["kind"] in GUARANTEE_KINDS and guarantees["summary"]
    assert isinstance(guarantees["certified"], bool)
    assert provenance["defense"]["guarantees"] == guarantees
    assert json.loads(json.dumps(provenance)) == provenance  # a JSON record, no Python objects
    assert all(torch.isfinite(w).all() for w in first.values())
    loaded = modelsec.load_model(tmp_path / "a.safetensors").classifier
    assert loaded.num_classes == 3 and loaded.input_shape == (8,)

    _, again = run(3, "b.safetensors")
    _, other = run(4, "c.safetensors")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
