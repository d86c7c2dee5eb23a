"""MLflow tracking (issue 17): ``audit --mlflow`` and ``harden --mlflow`` against a real MLflow file store in a
temporary folder, each run read back through MLflow's own client and compared with the files modelsec wrote;
the checks made before any work (MLflow missing, a URI MLflow cannot use); when tracking is on by default.

MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set; the tests set it (modelsec never
does, see :mod:`modelsec.outputs.tracking`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelsec.core.errors import ConfigError
from modelsec.outputs import tracking
from modelsec.results.audit import AuditResult
from tests.cli_runner import assert_user_error, modelsec
from tests.report_fixtures import make_audit_result

try:
    import mlflow
except ImportError:  # the tests that need no MLflow still run
    mlflow = None  # type: ignore[assignment]
needs_mlflow = pytest.mark.skipif(mlflow is None, reason="MLflow is not installed (pip install 'modelsec[mlflow]')")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A file store in a temporary folder as ``$MLFLOW_TRACKING_URI``, allowed by ``MLFLOW_ALLOW_FILE_STORE``."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelsec.defenses.training import TrainingConfig, train_and_save

    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    train_and_save(data="digits", arch="mlp", out=path, config=TrainingConfig(epochs=4, batch_size=64, seed=0))
    return path


def _audit(model: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return modelsec(
        "audit", "--model", str(model), "--data", "digits", "--eps", "0.05,0.1", "--samples", "24",
        "--mia-samples", "60", "--attacks", "fgsm", "--out", str(out), "--no-store", *args,
    )  # fmt: skip


def _runs(uri: str, experiment: str = "modelsec") -> list[Any]:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else list(client.search_runs([found.experiment_id]))


# -- names and values, without MLflow's store --------------------------------------------------------------------


@needs_mlflow
def test_metric_names_are_ones_mlflow_accepts_and_no_name_is_a_folder_of_another() -> None:
    from mlflow.utils.validation import _validate_metric_name

    result = make_audit_result()
    metrics = tracking.audit_metrics(result)
    tracking.check_names(list(metrics))
    for name in metrics:
        _validate_metric_name(name)
    assert result.robustness is not None and result.privacy is not None
    assert metrics["robust_accuracy/0.1/worst_case"] == result.robustness.robust_accuracy["0.1"]
    assert metrics["robust_accuracy/0.1/worst_case_ci_low"] == result.robustness.robust_ci["0.1"].low
    lira = next(a for a in result.privacy.attacks if a.attack == "lira")
    assert metrics["membership/lira/tpr_at_fpr_0.001"] == lira.tpr_at_fpr["0.001"]
    assert metrics["membership/lira/epsilon_lower_bound"] == lira.epsilon_lower_bound
    assert metrics["time/total"] == result.timings["total"]
    assert "dp_claimed_epsilon" not in metrics and "model.dp_epsilon" not in tracking.audit_params(result)
    claimed = dataclasses.replace(result, model=dataclasses.replace(result.model, dp_epsilon=3.0, dp_delta=1e-5))
    assert tracking.audit_metrics(claimed)["dp_claimed_epsilon"] == 3.0
    assert tracking.audit_params(claimed)["model.dp_delta"] == "1e-05"
    with pytest.raises(ValueError, match="clash"):
        tracking.check_names(["a", "a/b"])


def test_names_are_sanitised_and_params_flattened() -> None:
    assert tracking.metric_name("robust_accuracy", "0.1", "apgd-ce") == "robust_accuracy/0.1/apgd-ce"
    assert tracking.metric_name("m", "x/y(z=1)", "..", "") == "m/x_y_z_1_/_/_"
    assert tracking.rule_metric("privacy.max_tpr_at_fpr(fpr=0.001)") == "privacy.max_tpr_at_fpr.fpr_0.001"
    assert tracking.rule_metric("privacy.max_auc") == "privacy.max_auc"
    params = dict(tracking.flatten_params({"a": {"b": None, "c": [1, 2], "d": "x" * 7000}, "e": True}))
    assert params == {"a.b": "null", "a.c": "[1, 2]", "a.d": "x" * 6000, "e": "true"}


def test_a_hardening_without_training_logs_no_series() -> None:
    record = {
        "defense": {"name": "output-hardening", "config": {"output": "label-only"}, "base": {"sha256": "ab"}},
        "guarantees": {"kind": "empirical", "summary": "labels only", "details": {"k": 1, "note": "text"}},
        "training": None,
    }
    assert tracking.hardening_metrics(record) == {"guarantee/k": (1.0,)}
    assert tracking.hardening_params(record) == {
        "defense": "output-hardening", "config.output": "label-only", "modelsec_version": tracking.__version__,
        "base.sha256": "ab",
    }  # fmt: skip
    assert tracking.hardening_tags(record)["modelsec.guarantee"] == "empirical"


def test_tracking_is_on_when_the_uri_is_set_unless_said_otherwise() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert tracking.tracking_enabled(None, None, env) and not tracking.tracking_enabled(False, None, env)
    assert not tracking.tracking_enabled(None, None, {}) and not tracking.tracking_enabled(
        None, None, {"MLFLOW_TRACKING_URI": ""}
    )
    assert tracking.tracking_enabled(None, "http://x", {}) and tracking.tracking_enabled(True, None, {})
    assert tracking.mlflow_target(False, "file:///nowhere") is None


def test_mlflow_is_imported_only_when_tracking_is_on() -> None:
    code = (
        "import sys; from modelsec.cli import main; from modelsec.outputs import tracking; "
        "assert tracking.mlflow_target(False, 'http://x') is None; print('mlflow' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "False"


# -- the checks before any work ------------------------------------------------------------------------------------


def test_mlflow_missing_is_a_user_error_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    out = tmp_path / "o"
    proc = modelsec("audit", "--data", "digits", "--mlflow", "--out", str(out))
    assert_user_error(proc, "--mlflow needs MLflow, which is not installed")
    assert "pip install 'modelsec[mlflow]'" in proc.stderr
    model = tmp_path / "m.safetensors"
    proc = modelsec("harden", "--defense", "standard", "--data", "digits", "--out", str(model), "--mlflow")
    assert_user_error(proc, "pip install 'modelsec[mlflow]'")
    assert not out.exists() and not model.exists()


@needs_mlflow
def test_a_uri_mlflow_cannot_use_is_a_user_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    proc = modelsec("audit", "--data", "digits", "--mlflow-uri", "nosuchscheme://host/x", "--out", str(out))
    assert_user_error(proc, "MLflow cannot track to nosuchscheme://host/x: it has no tracking store for 'nosuchscheme'")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    proc = modelsec("audit", "--data", "digits", "--out", str(out))
    assert_user_error(proc, "unless MLFLOW_ALLOW_FILE_STORE=true is set")
    assert not out.exists()


@needs_mlflow
def test_the_experiment_is_created_once_and_a_deleted_one_refused(store: str) -> None:
    first = tracking.mlflow_target(True, None, "audits")
    assert first is not None and first.uri == store
    again = tracking.mlflow_target(None, None, "audits")
    assert again is not None and again.experiment_id == first.experiment_id
    first.client.delete_experiment(first.experiment_id)
    with pytest.raises(ConfigError, match=r"experiment 'audits' at .* is deleted: restore it"):
        tracking.mlflow_target(True, None, "audits")
    with pytest.raises(ConfigError, match="the experiment's name is empty"):
        tracking.mlflow_target(True, None, " ")


@needs_mlflow
def test_without_a_uri_mlflows_default_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No URI given or set: MLflow's own default (``sqlite:///mlflow.db`` in the working folder), which
    mlflow-skinny cannot use (no SQLAlchemy): a user error naming what to install or set."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    default = mlflow.get_tracking_uri()
    try:
        target = tracking.mlflow_target(True, None)
    except ConfigError as e:
        assert default in str(e) and "MLFLOW_TRACKING_URI is not set" in str(e)
    else:  # the full MLflow, with SQLAlchemy
        assert target is not None and target.uri == default


# -- the round trips -----------------------------------------------------------------------------------------------


@needs_mlflow
def test_audit_round_trip_through_mlflows_client(digits_model: Path, tmp_path: Path, store: str) -> None:
    policy = tmp_path / "policy.toml"
    # the lower end of a Clopper-Pearson interval on 24 samples is below 1 whatever the audit measures: it fails
    policy.write_text(
        "[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 1.0, bound = 'lower' }\n"
        "[privacy]\nmax_auc = { value = 1.0 }\n"
    )
    out = tmp_path / "o"
    proc = _audit(digits_model, out, "--policy", str(policy), "--mlflow-experiment", "digits audits")
    assert proc.returncode == 4, proc.stderr  # the policy's exit code, after logging
    (run,) = _runs(store, "digits audits")
    assert f"mlflow run: {run.info.run_id}" in proc.stdout
    result = AuditResult.load(out / "result.json")
    written = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert run.info.status == "FINISHED"

    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["seed"] == str(result.seed) == str(written["seed"])
    assert params["settings.eps"] == "[0.05, 0.1]" and params["settings.attacks"] == '["fgsm"]'
    assert params["data.name"] == "digits" and params["model.arch"] == "mlp"
    assert params["model.format"] == "safetensors" and params["modelsec_version"] == written["versions"]["modelsec"]

    robustness = written["robustness"]
    assert metrics["clean_accuracy"] == robustness["clean_accuracy"]
    for eps in ("0.05", "0.1"):
        assert metrics[f"robust_accuracy/{eps}/worst_case"] == robustness["robust_accuracy"][eps]
        assert metrics[f"robust_accuracy/{eps}/worst_case_ci_high"] == robustness["robust_ci"][eps]["high"]
    for entry in robustness["results"]:
        assert metrics[f"robust_accuracy/{entry['eps']!r}/{entry['attack']}"] == entry["robust_accuracy"]
    assert written["privacy"]["attacks"]
    for attack in written["privacy"]["attacks"]:
        name = f"membership/{attack['attack']}"
        assert metrics[f"{name}/auc"] == attack["auc"]
        assert metrics[f"{name}/tpr_at_fpr_0.001"] == attack["tpr_at_fpr"]["0.001"]
        assert metrics[f"{name}/epsilon_lower_bound"] == attack["epsilon_lower_bound"]
    assert metrics["time/total"] == written["timings"]["total"]
    assert metrics["policy/passed"] == 0.0
    assert metrics["policy/robustness.min_robust_accuracy.eps_0.1"] == 0.0 and metrics["policy/privacy.max_auc"] == 1.0

    assert tags["modelsec.model_sha256"] == result.model.sha256
    assert tags["modelsec.run_id"] == result.run_id and tags["modelsec.kind"] == "audit"
    assert tags["modelsec.verdict"] == result.verdict.level and tags["modelsec.policy"] == "failed"

    client = mlflow.MlflowClient(store)
    artifacts = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id)}
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert artifacts == files and {"result.json", "report.html", "adversarial.npz"} <= set(files)
    local = Path(client.download_artifacts(run.info.run_id, "result.json", str(tmp_path / "back")))
    assert local.read_bytes() == (out / "result.json").read_bytes()


@needs_mlflow
def test_harden_logs_each_epoch_as_a_step(tmp_path: Path, store: str) -> None:
    from modelsec.models.loading import sha256_file

    model = tmp_path / "hardened.safetensors"
    proc = modelsec(
        "harden", "--defense", "fgsm-rs", "--data", "digits", "--epochs", "3", "--eps", "0.05", "--out", str(model),
        "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "mlflow run:" not in proc.stdout  # --quiet
    (run,) = _runs(store)
    provenance = json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))
    history = provenance["training"]
    client = mlflow.MlflowClient(store)
    series = {"train_loss": history["train_loss"], "test_accuracy": history["test_accuracy"], **history["metrics"]}
    assert len(series) >= 3
    for name, values in series.items():
        logged = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [(m.step, m.value) for m in logged] == list(enumerate(values)), name
    assert len(history["train_loss"]) == 3
    params, tags = run.data.params, run.data.tags
    assert params["defense"] == "fgsm-rs" and params["config.eps"] == "0.05" and params["config.epochs"] == "3"
    assert tags["modelsec.model_sha256"] == sha256_file(model) and tags["modelsec.kind"] == "harden"
    assert tags["modelsec.guarantee"] == provenance["guarantees"]["kind"] == "empirical"
    assert tags["modelsec.guarantee_summary"] == provenance["guarantees"]["summary"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"hardened.safetensors", "hardened.safetensors.json"}


@needs_mlflow
def test_the_flag_and_the_environment_decide(digits_model: Path, tmp_path: Path, store: str) -> None:
    proc = _audit(digits_model, tmp_path / "off", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr
    assert "mlflow run:" not in proc.stdout and _runs(store) == []
    proc = _audit(digits_model, tmp_path / "on")  # $MLFLOW_TRACKING_URI set, no flag
    assert proc.returncode == 0, proc.stderr
    (run,) = _runs(store)
    assert f"mlflow run: {run.info.run_id}" in proc.stdout


@needs_mlflow
def test_a_logging_failure_after_the_files_is_a_user_error_and_keeps_them(
    digits_model: Path, tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", fail)
    out = tmp_path / "o"
    proc = _audit(digits_model, out)
    assert_user_error(proc, "logging to MLflow at")
    assert "marked failed" in proc.stderr and "disk full" in proc.stderr and "the files written are kept" in proc.stderr
    assert (out / "result.json").exists() and (out / "report.html").exists()
    (run,) = _runs(store)
    assert run.info.status == "FAILED"


@needs_mlflow
def test_compare_logs_each_models_audit_as_a_run(digits_model: Path, tmp_path: Path, store: str) -> None:
    """``compare --mlflow``: one MLflow run per compared model, its numbers those of the model's own result.json,
    tagged with the comparison and the model's name; checked before any work like ``audit --mlflow``."""
    import shutil

    copy = tmp_path / "copy.safetensors"
    shutil.copy(digits_model, copy)
    out = tmp_path / "compare"
    proc = modelsec(
        "compare", str(digits_model), str(copy), "--data", "digits", "--eps", "0.1", "--samples", "24",
        "--mia-samples", "60", "--attacks", "fgsm", "--out", str(out), "--no-store",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = {r.data.tags["modelsec.compared_model"]: r for r in _runs(store)}
    assert set(runs) == {"digits", "copy"}
    for name, run in runs.items():
        assert f"mlflow run: {run.info.run_id} ({name};" in proc.stdout
        written = json.loads((out / name / "result.json").read_text(encoding="utf-8"))
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["modelsec.run_id"] == written["run_id"] and tags["modelsec.baseline_model"] == "digits"
        assert tags["modelsec.comparison"] == str(out / "comparison.json")
        assert metrics["robust_accuracy/0.1/worst_case"] == written["robustness"]["robust_accuracy"]["0.1"]
        artifacts = {a.path for a in mlflow.MlflowClient(store).list_artifacts(run.info.run_id)}
        assert artifacts == {p.name for p in (out / name).iterdir()}
    assert_user_error(
        modelsec("compare", str(digits_model), str(copy), "--mlflow-uri", "nosuch://x", "--out", str(tmp_path / "n")),
        "no tracking store",
    )
    assert not (tmp_path / "n").exists()


@needs_mlflow
def test_the_python_api_logs_to_the_uri_given(
    digits_model: Path, tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``modelsec.audit(..., mlflow=URI)``: the same run as ``--mlflow``; off by default, even with
    ``$MLFLOW_TRACKING_URI`` set (a library call logs only when asked)."""
    import modelsec as api

    options: dict[str, Any] = dict(eps=(0.1,), samples=24, mia_samples=60, attacks=("fgsm",))
    api.audit(str(digits_model), "digits", out=tmp_path / "quiet", **options)
    assert _runs(store) == []
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = api.audit(
        str(digits_model), "digits", out=tmp_path / "o", mlflow=store, mlflow_experiment="api", **options
    )
    (run,) = _runs(store, "api")
    assert run.data.tags["modelsec.run_id"] == result.run_id
    assert result.robustness is not None
    assert run.data.metrics["robust_accuracy/0.1/worst_case"] == result.robustness.robust_accuracy["0.1"]
    with pytest.raises(ConfigError, match="no tracking store"):
        api.audit(str(digits_model), "digits", out=tmp_path / "n", mlflow="nosuch://x", **options)
    assert not (tmp_path / "n").exists()


@needs_mlflow
def test_audit_dp_logs_the_claim_and_the_bound(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``audit-dp --mlflow`` (on through ``$MLFLOW_TRACKING_URI``): the claim, the lower bound and the policy's
    rules as metrics equal to ``dp_audit.json``'s, its files and the JUnit file as artifacts, logged before the
    policy's exit code 4."""
    import numpy as np

    from modelsec.audits import dp_audit
    from modelsec.results.dp_audit import DPClaim
    from tests.test_dp_audit import blobs, oracle, run_cli

    data = blobs(900, 0)
    npz = tmp_path / "blobs.npz"
    np.savez(npz, x=data.x, y=data.y)
    claim = DPClaim(epsilon=100.0, delta=1e-5, accountant="prv", epsilons={"prv": 100.0, "rdp": 120.0})
    monkeypatch.setattr(dp_audit, "defense_trainer", lambda defense, config, **kwargs: oracle(claim))
    policy = tmp_path / "policy.toml"
    policy.write_text("[dp]\nmax_claimed_epsilon = { value = 8.0 }\n")
    out, junit = tmp_path / "dp", tmp_path / "dp.xml"
    code = run_cli("audit-dp", "--data", str(npz), "--canaries", "100", "--out", str(out), "--policy", str(policy),
                   "--junit", str(junit))  # fmt: skip
    assert code == 4, capsys.readouterr().err
    (run,) = _runs(store)
    assert f"mlflow run: {run.info.run_id}" in capsys.readouterr().out
    written = json.loads((out / "dp_audit.json").read_text(encoding="utf-8"))
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    assert metrics["epsilon_lower_bound"] == written["lower_bound"] and metrics["claimed_epsilon"] == 100.0
    assert metrics["epsilon/rdp"] == 120.0 and metrics["claim_upheld"] == 1.0
    assert metrics["correct_guesses"] == written["v"] and metrics["time/audit"] == written["audit_seconds"]
    assert metrics["policy/passed"] == 0.0 and metrics["policy/dp.max_claimed_epsilon"] == 0.0
    assert tags["modelsec.kind"] == "dp-audit" and tags["modelsec.dp_claim"] == "upheld"
    assert tags["modelsec.policy"] == "failed"
    assert params["canaries"] == "100" and params["seed"] == str(written["seed"])
    artifacts = {a.path for a in mlflow.MlflowClient(store).list_artifacts(run.info.run_id)}
    assert artifacts == {"dp_audit.json", "dp_audit.html", "dp.xml"}
