"""End-to-end audits: a tiny trained model on digits, and the bundled Fashion-MNIST model's published numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelsec.attacks.norms import NORMS
from modelsec.audits import AuditConfig
from modelsec.defenses.training import TrainingConfig, train_and_save
from modelsec.models import load_model
from modelsec.outputs.audit import audit_and_write as run_audit  # the audit, then its files (as the CLI)
from modelsec.results.audit import AuditResult, eps_key
from modelsec.results.schema import validate_result_dict
from modelsec.store import RunStore
from tests.conftest import needs_fashion_mnist


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    meta = train_and_save(data="digits", arch="mlp", out=path, config=TrainingConfig(epochs=30, batch_size=64, seed=0))
    assert meta["training"]["test_accuracy"][-1] > 0.9
    return path


def reclassify_adversarial(result: AuditResult, out_dir: Path, model_path: Path | None) -> None:
    """The stored worst-case adversarial examples re-classify to exactly the reported robust accuracy, and lie
    inside the threat model and the bounds."""
    assert result.robustness is not None and result.robustness.adversarial_file
    arrays = np.load(out_dir / result.robustness.adversarial_file, allow_pickle=False)
    clf = load_model(model_path).classifier
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    norm = NORMS.get(result.settings["norm"])
    for i, eps in enumerate(arrays["eps"]):
        x_adv = torch.from_numpy(arrays[f"x_adv_{i}"])
        robust = clf.predict(x_adv) == y
        assert int(robust.sum()) / len(robust) == result.robustness.robust_accuracy[eps_key(eps)]
        assert torch.equal(robust, torch.from_numpy(arrays[f"robust_{i}"]))
        assert float(norm.distance(x, x_adv).max()) <= eps + 1e-6
        assert clf.bounds[0] <= float(x_adv.min()) and float(x_adv.max()) <= clf.bounds[1]


def test_digits_audit_end_to_end(digits_model: Path, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    config = AuditConfig(eps=(0.2, 0.05), samples=150, mia_samples=400, preset="quick", seed=3)
    outcome = run_audit(digits_model, None, config=config, out_dir=tmp_path / "out", store=store)
    r = outcome.result
    d = json.loads((tmp_path / "out" / "result.json").read_text())
    validate_result_dict(d)
    assert AuditResult.from_dict(d).to_dict() == r.to_dict()
    rob = r.robustness
    assert rob is not None and r.privacy is not None
    assert r.data.name == "digits" and r.model.arch == "mlp"
    assert rob.clean_accuracy > 0.9
    assert list(rob.robust_accuracy) == ["0.05", "0.2"]
    assert rob.robust_accuracy["0.2"] <= rob.robust_accuracy["0.05"] <= rob.clean_accuracy
    for entry in rob.results:  # the worst case is at most every single attack
        assert rob.robust_accuracy[eps_key(entry.eps)] <= entry.robust_accuracy
        assert entry.ci_low <= entry.robust_accuracy <= entry.ci_high
    assert set(rob.checks) >= {"randomness", "zero-gradients", "large-eps-not-broken"}
    # without reference models, every attack that needs none runs by default (label-only: labels-only models)
    assert [a.attack for a in r.privacy.attacks] == ["confidence", "entropy", "loss-threshold", "modified-entropy"]
    for mia in r.privacy.attacks:
        assert 0.0 <= mia.auc <= 1.0
        assert mia.n_members == mia.n_nonmembers == 400
        assert set(mia.tpr_at_fpr) == {"0.001", "0.01", "0.1"}
    assert len(r.privacy.exposed_records) == 20 and r.privacy.compute["target_queries"] == 800
    exposed_csv = (tmp_path / "out" / "exposed_records.csv").read_text().splitlines()
    assert len(exposed_csv) == 21 and exposed_csv[0].startswith("rank,member_index")
    reclassify_adversarial(r, tmp_path / "out", digits_model)
    html = (tmp_path / "out" / "report.html").read_text()
    assert r.verdict.headline.split(":")[0] in html
    stored = store.get(r.run_id)
    assert stored.result is not None and stored.result.to_dict() == r.to_dict()
    assert all(store.verify_artifacts(r.run_id).values())


def test_same_seed_same_numbers(digits_model: Path) -> None:
    config = AuditConfig(eps=(0.1,), samples=80, mia_samples=200, preset="quick", seed=11, checks=False)
    a = run_audit(digits_model, None, config=config).result
    b = run_audit(digits_model, None, config=config).result
    assert a.robustness is not None and b.robustness is not None and a.privacy is not None and b.privacy is not None
    assert a.robustness.robust_accuracy == b.robustness.robust_accuracy
    assert [e.robust_accuracy for e in a.robustness.results] == [e.robust_accuracy for e in b.robustness.results]
    assert [(m.auc, m.auc_ci, m.tpr_at_fpr) for m in a.privacy.attacks] == [
        (m.auc, m.auc_ci, m.tpr_at_fpr) for m in b.privacy.attacks
    ]


@needs_fashion_mnist
def test_bundled_model_meets_its_published_numbers(tmp_path: Path) -> None:
    """The issue's acceptance numbers: on 1000 Fashion-MNIST test images, clean accuracy >= 90% and PGD-20 at
    L-inf eps=0.1 leaves <= 3% robust accuracy; result.json matches a re-classification of the examples."""
    config = AuditConfig(eps=(0.1,), samples=1000, mia_samples=2000, attacks=("pgd",), pgd_steps=20, checks=False)
    r = run_audit(None, None, config=config, out_dir=tmp_path).result
    assert r.robustness is not None
    assert r.data.name == "fashion-mnist" and r.model.parameters == 421642
    assert r.robustness.clean_accuracy >= 0.90
    assert r.robustness.robust_accuracy["0.1"] <= 0.03
    reclassify_adversarial(r, tmp_path, None)


def test_python_api_audits_an_nn_module_twice(tmp_path: Path) -> None:
    """``modelsec.audit`` stays callable after the audit machinery is imported (no package/function clash),
    and audits a plain ``nn.Module`` on splits it is given."""
    import modelsec

    splits = modelsec.load_data("digits", seed=0)
    torch.manual_seed(0)  # test-local initialisation of the throwaway model
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    for _ in range(2):
        r = modelsec.audit(net, splits, eps=(0.1,), samples=50, mia_samples=100, preset="quick", checks=False)
        assert r.model.format == "nn.Module" and r.robustness is not None and r.robustness.n == 50
    stored = modelsec.audit(
        net, splits, eps=(0.1,), samples=20, mia_samples=50, preset="quick", checks=False, store=tmp_path / "s.db"
    )
    assert (tmp_path / "s.db").exists() and stored.run_id


def test_audit_with_reference_models_reuses_the_cache(digits_model: Path, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    config = AuditConfig(
        eps=(0.1,), samples=20, mia_samples=150, preset="quick", checks=False,
        reference_models=2, reference_epochs=3, workers=1,
    )  # fmt: skip
    first = run_audit(digits_model, None, config=config, store=store).result
    assert first.privacy is not None
    names = [a.attack for a in first.privacy.attacks]
    assert {"lira", "lira-offline", "rmia", "rmia-offline", "shadow", "loss-threshold"} <= set(names)
    compute = first.privacy.compute
    assert compute["reference_models"] == 2 and compute["reference_mode"] == "online" and not compute["from_cache"]
    second = run_audit(digits_model, None, config=config, store=store).result
    assert second.privacy is not None and second.privacy.compute["from_cache"]
    assert [(a.attack, a.auc) for a in second.privacy.attacks] == [(a.attack, a.auc) for a in first.privacy.attacks]
    assert first.settings["reference_models"] == 2


def test_a_model_trained_on_some_members_is_audited_against_those_only(tmp_path: Path) -> None:
    """``train --members N`` trains on the first N members: the audit's members are those N (the others, never
    trained on, join the population), and the header's recipe is what reference models would follow."""
    from torch import nn

    from modelsec.audits.reference_choice import choose_recipe
    from modelsec.audits.reference_models import BuiltinRecipe
    from modelsec.models.adapters import LoadRequest
    from modelsec.models.loading import read_card
    from modelsec.models.torch import read_safetensors_metadata

    path = tmp_path / "few.safetensors"
    train_and_save(
        data="digits", arch="mlp", out=path, members=120, config=TrainingConfig(epochs=3, batch_size=32, seed=1)
    )
    meta = read_safetensors_metadata(path)
    assert meta["training"]["config"]["epochs"] == 3 and meta["data"]["members_used"] == 120
    config = AuditConfig(eps=(0.1,), samples=20, mia_samples=500, preset="quick", checks=False)
    r = run_audit(path, None, config=config).result
    assert r.data.n_members == 120 and r.privacy is not None
    assert all(a.n_members == 120 for a in r.privacy.attacks)
    recipe, _ = choose_recipe(
        arch_option=None, overrides={}, info=r.model, card=read_card(path), own=None, module=nn.Identity(),
        request=LoadRequest(),
    )  # fmt: skip
    assert isinstance(recipe, BuiltinRecipe) and not recipe.guessed
    assert recipe.arch == "mlp" and (recipe.training.epochs, recipe.training.batch_size) == (3, 32)
