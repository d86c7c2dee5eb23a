"""The policy commands: ``audit-policy``, ``compare-policies``, ``harden-policy``; exit code 0 with their files, 2
with a clear message and no traceback for a user's mistake. Run in-process (``main(argv)``) so that they stay fast
(the rendered animation is tested in test_policy_audit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelsec.cli.main import main
from tests.test_policy_audit import linear_cartpole_policy

pytest.importorskip("gymnasium")
pytest.importorskip("modelsec.rl.rollout")
pytest.importorskip("modelsec.rl.files")

SMALL = ["--episodes", "2", "--eps", "5", "--attacks", "random,pgd", "--max-steps", "30", "--scale-episodes", "1"]


def run(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelsec.rl.files import save_policy

    path = tmp_path_factory.mktemp("policies") / "linear.safetensors"
    save_policy(linear_cartpole_policy(), path)
    return path


def test_audit_policy_writes_result_report_and_store_row(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelsec.results.policy_audit import PolicyAuditResult
    from modelsec.store.runs import RunStore

    out, store = tmp_path / "audit", tmp_path / "runs.sqlite"
    code = run("audit-policy", "--policy", str(policy_file), "--env", "CartPole-v1", *SMALL, "--no-render",
               "--out", str(out), "--store", str(store))  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "FAIL" in printed and "worst case" in printed and f"report: {out / 'report.html'}" in printed
    result = PolicyAuditResult.load(out / "result.json")  # checked against the schema
    assert result.policy.path == str(policy_file) and result.policy.format == "safetensors"
    assert result.policy.sha256 is not None and len(result.policy.sha256) == 64
    assert result.settings["attacks"] == ["random", "pgd"] and result.eps == [5.0]
    assert result.animation is None and not (out / "episode.gif").exists()  # --no-render
    assert "No frames were rendered" in (out / "report.html").read_text(encoding="utf-8")
    (row,) = RunStore(store).list_runs()
    assert row.kind == "policy-audit" and row.id == result.run_id
    assert run("runs", "show", row.id, "--json", "--store", str(store)) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == row.id
    assert run("report", str(out / "result.json"), "--out", str(tmp_path / "again.html")) == 0
    assert result.verdict.headline in (tmp_path / "again.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["--env", "Pendulum-v1"], "shape"),
        (["--env", "CartPole-v1", "--eps", "0.1,abc"], "--eps"),
        (["--env", "CartPole-v1", "--eps", "-0.1"], "eps"),
        (["--env", "CartPole-v1", "--attacks", "pgd,nope"], "nope"),
        (["--env", "CartPole-v1", "--norm", "l3"], "l3"),
    ],
)
def test_audit_policy_user_errors_exit_2(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = run("audit-policy", "--policy", str(policy_file), *argv, "--episodes", "1", "--max-steps", "5",
               "--out", str(tmp_path / "out"), "--no-store")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_audit_policy_refuses_a_file_that_is_not_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "policy.safetensors"
    bogus.write_bytes(b"not a policy at all")
    code = run(
        "audit-policy", "--policy", str(bogus), "--env", "CartPole-v1", "--out", str(tmp_path / "o"), "--no-store"
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "modelsec: error" in err
    missing = run("audit-policy", "--policy", str(tmp_path / "none.zip"), "--env", "CartPole-v1", "--no-store",
                  "--out", str(tmp_path / "o"))  # fmt: skip
    assert missing == 2 and "no policy file" in capsys.readouterr().err


def test_compare_policies_recommends_and_writes_each_audit(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelsec.results.policy_audit import PolicyComparison

    out = tmp_path / "compare"
    code = run("compare-policies", "--policies", f"{policy_file},{policy_file}", "--env", "CartPole-v1", *SMALL,
               "--no-render", "--out", str(out), "--no-store")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    comparison = PolicyComparison.from_dict(json.loads((out / "comparison.json").read_text(encoding="utf-8")))
    assert [p.name for p in comparison.policies] == ["linear", "linear-2"]
    first, second = comparison.policies
    # the same policy, episodes, attacks and scale: the same numbers, and a recommendation among equals
    assert first.clean_return == second.clean_return and first.worst_return == second.worst_return
    assert comparison.recommendation.most_robust == "linear"
    assert (out / "linear" / "result.json").exists() and (out / "linear-2" / "report.html").exists()
    assert "linear-2/report.html" in (out / "comparison.html").read_text(encoding="utf-8")
    assert run("compare-policies", "--policies", str(policy_file), "--env", "CartPole-v1", "--out", str(out)) == 2


def test_harden_policy_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("modelsec.rl.ppo")
    out = str(tmp_path / "p.safetensors")
    assert run("harden-policy", "--env", "NoSuchEnv-v0", "--out", out) == 2
    assert "NoSuchEnv-v0" in capsys.readouterr().err
    assert run("harden-policy", "--env", "CartPole-v1", "--defense", "standard", "--eps", "0.1", "--out", out) == 2
    assert "--eps" in capsys.readouterr().err
    assert run("harden-policy", "--env", "CartPole-v1", "--defense", "nope", "--out", out) == 2
    assert run("harden-policy", "--env", "CartPole-v1", "--scale-from", out, "--out", out) == 2
    assert "--scale-from only apply with --defense" in capsys.readouterr().err


def test_harden_policy_trains_and_saves_a_policy_the_audit_reads(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SA-PPO against the observation scale an audit of the baseline (--scale-from) estimates: the card records
    exactly that scale."""
    pytest.importorskip("modelsec.rl.ppo")
    from modelsec.audits.policy_audit import observation_scale
    from modelsec.rl.files import load_policy

    out = tmp_path / "ppo.safetensors"
    code = run("harden-policy", "--env", "CartPole-v1", "--defense", "sa-ppo", "--steps", "64", "--n-envs", "1",
               "--n-steps", "64", "--minibatch-size", "64", "--epochs", "1", "--attack-steps", "1", "--out", str(out),
               "--scale-from", str(policy_file), "--quiet")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    policy = load_policy(out)
    assert policy.card["defense"] == "sa-ppo" and policy.card["training_seconds"] > 0
    expected = observation_scale(load_policy(policy_file), "CartPole-v1")
    assert policy.card["hardening"]["scale"] == pytest.approx(expected.tolist())
    assert not out.with_name(out.name + ".ckpt").exists()
    assert run("harden-policy", "--env", "CartPole-v1", "--steps", "256", "--out", str(out)) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_audit_policy_of_a_stable_baselines3_zip_matches_sb3s_own_play(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PPO model trained and saved by Stable-Baselines3: the audit reads it without unpickling, and its clean
    returns are those of SB3's own deterministic play on the same seeded episodes (a reference rollout)."""
    sb3 = pytest.importorskip("stable_baselines3")
    import gymnasium

    from modelsec.results.policy_audit import PolicyAuditResult

    model = sb3.PPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu", n_steps=16, batch_size=16, n_epochs=1)
    model.learn(16)
    model.save(tmp_path / "ppo.zip")
    out = tmp_path / "audit"
    code = run("audit-policy", "--policy", str(tmp_path / "ppo.zip"), "--env", "CartPole-v1", *SMALL, "--no-render",
               "--no-store", "--quiet", "--out", str(out))  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = PolicyAuditResult.load(out / "result.json")
    assert result.policy.card["algorithm"] == "PPO" and result.policy.path == str(tmp_path / "ppo.zip")
    env = gymnasium.make("CartPole-v1")
    for seed, audited in zip(result.seeds, result.clean.returns, strict=True):
        obs, _ = env.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done and steps < 30:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        assert audited == total
    env.close()
