"""The policy audit: its result (JSON round trip, the schema), its report (the verdict, the tables, the curves, the
animated episode), its files and run-store row, and the workflow end to end on CartPole-v1."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelsec.results.audit import Verdict
from modelsec.results.policy_audit import (
    POLICY_AUDIT_SCHEMA,
    EpisodeReturns,
    PolicyAttackResult,
    PolicyAttackSetting,
    PolicyAuditResult,
    PolicyInfo,
    PolicyWorstCase,
    ScaleEstimate,
    SkippedPolicyAttack,
    relative_drop,
    validate_policy_audit_dict,
)
from modelsec.stats.intervals import Interval

SEEDS = [11, 12, 13, 14]


def _ci(low: float, high: float) -> Interval:
    return Interval(low, high, 0.95, "bootstrap-percentile")


def _attack(name: str, eps: float, returns: list[float]) -> PolicyAttackResult:
    steps = [int(r) for r in returns]
    attacked = [s if name != "timed" else s // 4 for s in steps]
    changed = [a // 3 if name != "random" else 0 for a in attacked]
    mean = float(np.mean(returns))
    return PolicyAttackResult(
        attack=name, eps=eps, returns=returns, steps=steps, attacked_steps=attacked, queries=[3 * s for s in steps],
        mean_return=mean, ci=_ci(min(returns), max(returns)), attacked_fraction=sum(attacked) / sum(steps),
        mean_queries=float(np.mean([3 * s for s in steps])), seconds=0.5,
        changed_actions=changed, changed_fraction=sum(changed) / sum(steps),
    )  # fmt: skip


def hand_made_result() -> PolicyAuditResult:
    """A CartPole audit as the workflow would write it: two eps, the random baseline, pgd and timed."""
    clean = [500.0, 500.0, 480.0, 500.0]
    table = {
        (0.1, "random"): [500.0, 490.0, 470.0, 500.0],
        (0.1, "pgd"): [120.0, 60.0, 200.0, 90.0],
        (0.1, "timed"): [150.0, 40.0, 220.0, 130.0],
        (0.2, "random"): [480.0, 460.0, 470.0, 500.0],
        (0.2, "pgd"): [20.0, 15.0, 30.0, 12.0],
        (0.2, "timed"): [25.0, 10.0, 35.0, 30.0],
    }
    results = [_attack(name, eps, returns) for (eps, name), returns in table.items()]
    worst = []
    for eps in (0.1, 0.2):
        at = {name: returns for (e, name), returns in table.items() if e == eps}
        per = [min(at, key=lambda n: at[n][i]) for i in range(len(clean))]
        returns = [at[per[i]][i] for i in range(len(clean))]
        mean = float(np.mean(returns))
        worst.append(PolicyWorstCase(eps, returns, per, mean, _ci(min(returns), max(returns)),
                                     relative_drop(float(np.mean(clean)), mean)))  # fmt: skip
    return PolicyAuditResult(
        run_id="20261203-050000-abcdef",
        created_at="2026-12-03T05:00:00+00:00",
        policy=PolicyInfo(
            path="/tmp/cartpole.safetensors",
            sha256="a" * 64,
            format="safetensors",
            observation_shape=[4],
            action={"kind": "discrete", "n": 2, "low": [], "high": []},
            has_critic=True,
            parameters=9155,
            card={"arch": "actor-critic-mlp", "algorithm": "ppo", "env_id": "CartPole-v1", "training_seconds": 61.0},
        ),
        env_id="CartPole-v1",
        episodes=len(clean),
        seeds=SEEDS,
        max_steps=None,
        norm="linf",
        eps=[0.1, 0.2],
        scale=ScaleEstimate(
            std=[0.1, 0.2, 0.03, 0.3],
            seeds=[1, 2],
            episodes=2,
            steps=1000,
            low=[-4.8, None, -0.42, None],
            high=[4.8, None, 0.42, None],
        ),
        attacks=[
            PolicyAttackSetting("random", "none"),
            PolicyAttackSetting("pgd", "gradients", {"steps": 10}),
            PolicyAttackSetting("timed", "gradients", {"budget": 0.25}),
        ],
        clean=EpisodeReturns(clean, [int(c) for c in clean], float(np.mean(clean)), _ci(480.0, 500.0), [500] * 4),
        results=results,
        worst_case=worst,
        verdict=Verdict(
            "fail",
            "the worst attack at eps 0.1 cuts the mean return from 495.0 to 72.5 (85% lost)",
            ["random noise of the same eps keeps 99% of it"],
        ),
        seed=0,
        settings={"episodes": 4, "eps": [0.1, 0.2], "norm": "linf", "preset": "quick"},
        versions={"modelsec": "0.1.0", "gymnasium": "1.4.0"},
        timings={"scale": 1.0, "clean": 2.0, "attacks": 10.0, "total": 13.0},
        preset="quick",
        skipped=[SkippedPolicyAttack("mad", "attacks continuous actions only")],
        notes=["<script>alert(1)</script> is escaped"],
    )


def test_relative_drop_of_positive_and_negative_returns() -> None:
    assert relative_drop(500.0, 100.0) == pytest.approx(0.8)
    assert relative_drop(-200.0, -400.0) == pytest.approx(1.0)  # Pendulum: twice as negative = 100% lost
    assert relative_drop(100.0, 120.0) == pytest.approx(-0.2)
    assert relative_drop(0.0, 5.0) is None


def test_result_round_trips_through_json_and_matches_its_schema() -> None:
    result = hand_made_result()
    d = json.loads(result.to_json())
    validate_policy_audit_dict(d)
    assert d["schema"] == POLICY_AUDIT_SCHEMA
    back = PolicyAuditResult.from_dict(d)
    assert back == result
    assert back.attack_names == ["random", "pgd", "timed"]
    assert back.strongest_attack(0.2).attack == "pgd"  # type: ignore[union-attr]
    assert back.worst_at(0.1).attacks == ["pgd", "timed", "pgd", "pgd"]  # type: ignore[union-attr]


def test_schema_refuses_a_broken_result() -> None:
    from modelsec.core.errors import DataError

    d = json.loads(hand_made_result().to_json())
    bad = json.loads(json.dumps(d))
    bad["results"][0]["attacked_fraction"] = 1.5
    with pytest.raises(ValueError, match="attacked_fraction"):
        validate_policy_audit_dict(bad)
    bad = json.loads(json.dumps(d))
    del bad["scale"]
    with pytest.raises(DataError, match="scale"):
        PolicyAuditResult.from_dict(bad)
    with pytest.raises(DataError, match=r"not a modelsec\.policy-audit/1"):
        PolicyAuditResult.from_dict({**d, "schema": "modelsec.dp-audit/1"})


def _frames(n: int, colour: tuple[int, int, int]) -> list[np.ndarray]:
    """``n`` frames with a moving bar (so frames differ); small, so that the test stays fast."""
    out = []
    for t in range(n):
        f = np.full((80, 120, 3), 255, dtype=np.uint8)
        x = 5 + (t * 3) % 100
        f[40:60, x : x + 10] = colour
        out.append(f)
    return out


def test_episode_gif_is_animated_side_by_side_and_small() -> None:
    from PIL import Image

    from modelsec.report.policy_audit import episode_gif

    gif, frames, stride = episode_gif(_frames(100, (200, 30, 30)), _frames(37, (30, 30, 200)), max_frames=40)
    assert len(gif) < 1_500_000
    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF" and image.n_frames == frames
    assert frames == 34 and stride == 3  # ceil(100 / 40); steps 0, 3, ..., 99 (the last one)
    assert image.size[0] == 2 * 240 + 4
    # a tiny byte budget: fewer frames and smaller panels, still a GIF
    small, few, wider = episode_gif(_frames(100, (200, 30, 30)), _frames(37, (30, 30, 200)), max_frames=40,
                                    max_bytes=12_000)  # fmt: skip
    assert len(small) <= 12_000 and few < frames and wider > stride


def test_report_shows_verdict_threat_model_table_curves_and_animation() -> None:
    from modelsec.report.policy_audit import episode_gif, render_policy_audit_html

    result = hand_made_result()
    gif, _, _ = episode_gif(_frames(20, (200, 30, 30)), _frames(10, (30, 30, 200)))
    html = render_policy_audit_html(result, animation=gif)
    verdict = html.index('id="verdict"')
    assert verdict < html.index('id="threat"') < html.index('id="table"')
    assert "verdict-fail" in html and "85% lost" in html
    for std in ("0.1", "0.2", "0.03", "0.3"):
        assert f"<td>{std}</td>" in html  # the recorded per-dimension std
    assert "unbounded" in html
    # one row per (eps, attack) and a worst case per eps, with the CI, attacked steps and queries
    assert html.count('class="worst"') == 2
    assert "[40.00, 220.00]" in html and "24.8%" in html and "405.0" in html and "(pgd 3, timed 1)" in html
    assert "actions changed" in html and "33.2%" in html  # pgd at eps 0.1: 156 of 470 steps
    images = re.findall(r'src="data:image/(png|gif);base64,([A-Za-z0-9+/=]+)"', html)
    assert [kind for kind, _ in images] == ["png", "png", "gif"]
    assert base64.b64decode(images[2][1]) == gif
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "/tmp/cartpole.safetensors" in html and "a" * 64 in html


def test_written_files_store_row_and_rerendered_report(tmp_path: Path) -> None:
    from modelsec.outputs.policy_audit import EpisodeFrames, rerender_policy_report, write_policy_audit
    from modelsec.store.runs import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    frames = EpisodeFrames(seed=12, attack="pgd", eps=0.2, clean=_frames(30, (0, 0, 0)),
                           attacked=_frames(15, (200, 0, 0)), clean_return=500.0, attacked_return=15.0)  # fmt: skip
    written = write_policy_audit(hand_made_result(), tmp_path / "out", frames=frames, store=store)
    assert sorted(written.files) == ["animation", "report", "result"]
    result = PolicyAuditResult.load(written.files["result"])
    assert result.animation is not None and result.animation.file == "episode.gif"
    assert result.animation.attack == "pgd" and result.animation.attacked_return == 15.0
    (row,) = store.list_runs()
    assert (row.kind, row.data_name, row.verdict_level, row.model_sha256) == ("policy-audit", "CartPole-v1", "fail",
                                                                              "a" * 64)  # fmt: skip
    stored = store.get(row.id)
    assert stored.result is None and stored.result_dict == json.loads(result.to_json())
    assert all(store.verify_artifacts(row.id).values())
    again = rerender_policy_report(written.files["result"], tmp_path / "again.html")
    assert "image/gif" in again.read_text(encoding="utf-8")


# -- the workflow end to end (needs Gymnasium and the rl modules) ------------------------------------------------------


def linear_cartpole_policy() -> Any:
    """The built-in actor-critic MLP (one hidden unit) set by hand to the linear controller "push right when
    angle + angular velocity > 0", which balances CartPole-v1 (return = the step limit) clean, and which any
    perturbation flipping the sign of angle + angular velocity at every step drives over (PGD at eps 5 does)."""
    import torch

    from modelsec.rl.architectures import ActorCriticMLP
    from modelsec.rl.policy import ActionSpec, Policy

    action = ActionSpec("discrete", n=2)
    module = ActorCriticMLP(4, action, hidden=(1,))
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.mlp_extractor.policy_net[0].weight[:] = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        module.action_net.weight[:] = torch.tensor([[0.0], [1.0]])
        module.mlp_extractor.value_net[0].weight[:] = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
        module.value_net.weight[:] = torch.tensor([[-1.0]])
    return Policy(module, (4,), action, has_critic=True, card={"env_id": "CartPole-v1", "algorithm": "hand-made"})


def _needs_rl() -> None:
    pytest.importorskip("gymnasium")
    pytest.importorskip("modelsec.rl.rollout")
    pytest.importorskip("modelsec.stats.bootstrap")


STEPS = 60


def _config(**changes: Any) -> Any:
    from modelsec.audits.policy_audit import PolicyAuditConfig

    settings: dict[str, Any] = {
        "env": "CartPole-v1",
        "episodes": 3,
        "eps": (5.0,),
        "attacks": ("random", "pgd", "timed"),
        "scale_episodes": 2,
        "max_steps": STEPS,
        "render": False,
    }
    return PolicyAuditConfig(**{**settings, **changes})


def _numbers(result: PolicyAuditResult) -> dict[str, Any]:
    """What must not change between two runs of one seed: everything but the run's id, time and seconds."""
    d = result.to_dict()
    for key in ("run_id", "created_at", "timings"):
        d.pop(key)
    for r in d["results"]:
        r.pop("seconds")
    return d


def test_workflow_end_to_end_on_cartpole() -> None:
    _needs_rl()
    from modelsec.audits.policy_audit import audit_policy
    from modelsec.rl.environments import episode_seeds
    from modelsec.rl.rollout import estimate_scale

    policy = linear_cartpole_policy()
    outcome = audit_policy(_config(render=True), policy=policy, frames=True)
    r = outcome.result
    validate_policy_audit_dict(json.loads(r.to_json()))
    assert r.seeds == episode_seeds(0, 3) and r.episodes == 3
    # the scale: recorded from clean rollouts with seeds of their own (a reference computation gives the same)
    assert not set(r.scale.seeds) & set(r.seeds) and r.scale.episodes == 2 and r.scale.steps == 2 * STEPS
    reference = estimate_scale(policy, "CartPole-v1", r.scale.seeds, max_steps=STEPS)
    assert r.scale.std == pytest.approx(reference.tolist())
    assert r.scale.low[0] == pytest.approx(-4.8) and r.scale.high[2] == pytest.approx(0.418879, abs=1e-5)
    assert r.clean.returns == [float(STEPS)] * 3 and r.clean.mean_return == STEPS
    pgd, noise, timed = r.result_for(5.0, "pgd"), r.result_for(5.0, "random"), r.result_for(5.0, "timed")
    assert pgd is not None and noise is not None and timed is not None
    assert pgd.ci.high < noise.ci.low  # PGD flips the controller, noise of the same size does not
    assert pgd.attacked_fraction == 1.0 and 0 < timed.attacked_fraction < 1.0
    # the actions changed: counted per episode, never more than the steps attacked; noise changes none of the
    # linear controller's confident actions that PGD flips
    for res in (pgd, noise, timed):
        assert res.changed_actions is not None and res.changed_fraction is not None
        assert all(0 <= c <= a for c, a in zip(res.changed_actions, res.attacked_steps, strict=True))
    assert pgd.changed_fraction is not None and noise.changed_fraction is not None
    assert pgd.changed_fraction > noise.changed_fraction
    assert all(q > s for q, s in zip(pgd.queries, pgd.steps, strict=True))  # PGD's gradient queries counted
    # the worst case is per episode, over every attack
    (worst,) = r.worst_case
    table = np.array([pgd.returns, noise.returns, timed.returns])
    assert worst.returns == table.min(axis=0).tolist()
    assert worst.relative_drop == pytest.approx(1 - worst.mean_return / STEPS)
    assert r.verdict.level == "fail" and "pgd" in r.verdict.headline
    assert r.policy.format == "module" and r.policy.sha256 is None and r.policy.has_critic
    # the animated episode: the one PGD hurt most, rendered again with the same seed
    frames = outcome.frames
    assert frames is not None and frames.attack == "pgd" and frames.eps == 5.0
    index = r.seeds.index(frames.seed)
    assert frames.attacked_return == pgd.returns[index] and frames.clean_return == STEPS
    assert len(frames.clean) == STEPS + 1 and len(frames.attacked) == pgd.steps[index] + 1
    assert frames.clean[0].ndim == 3 and frames.clean[0].dtype == np.uint8


def test_same_seed_gives_the_same_numbers_and_another_seed_other_episodes() -> None:
    _needs_rl()
    from modelsec.audits.policy_audit import audit_policy

    config = _config(episodes=2, attacks=("random", "pgd"), max_steps=40)
    first = audit_policy(config, policy=linear_cartpole_policy()).result
    again = audit_policy(config, policy=linear_cartpole_policy()).result
    assert _numbers(first) == _numbers(again)
    other = audit_policy(
        _config(episodes=2, attacks=("random",), max_steps=40, seed=1), policy=linear_cartpole_policy()
    )
    assert other.result.seeds != first.seeds


def test_user_errors_of_the_workflow() -> None:
    _needs_rl()
    from modelsec.audits.policy_audit import PolicyAuditConfig, audit_policy
    from modelsec.core.errors import ConfigError

    with pytest.raises(ConfigError, match="eps"):
        PolicyAuditConfig(env="CartPole-v1", eps=(0.1, -1.0))
    with pytest.raises(ConfigError, match="eps"):
        PolicyAuditConfig(env="CartPole-v1", eps=(float("nan"),))
    with pytest.raises(ConfigError, match="NoSuchEnv-v0"):
        audit_policy(_config(env="NoSuchEnv-v0"), policy=linear_cartpole_policy())
    with pytest.raises(ConfigError, match="shape"):  # a CartPole policy on Pendulum's 3 observations
        audit_policy(_config(env="Pendulum-v1"), policy=linear_cartpole_policy())
    with pytest.raises(ConfigError, match="no-such-attack"):
        audit_policy(_config(attacks=("no-such-attack",)), policy=linear_cartpole_policy())
    with pytest.raises(ConfigError, match="continuous"):  # an attack asked for by name that cannot run: refused
        audit_policy(_config(attacks=("timed",), env="Pendulum-v1"), policy=_pendulum_policy())


def _pendulum_policy() -> Any:
    from modelsec.rl.architectures import actor_critic_policy
    from modelsec.rl.policy import ActionSpec

    return actor_critic_policy((3,), ActionSpec("continuous", low=(-2.0,), high=(2.0,)), hidden=(4,), seed=0)


def test_preset_skips_attacks_the_policy_cannot_take() -> None:
    _needs_rl()
    from modelsec.audits.policy_audit import PRESET_ATTACKS, audit_policy

    policy = linear_cartpole_policy()
    policy.has_critic = False
    r = audit_policy(_config(attacks=None, episodes=1, max_steps=10, scale_episodes=1), policy=policy).result
    assert r.preset == "quick"
    assert r.attack_names == [a for a in PRESET_ATTACKS["quick"]["discrete"] if a != "critic"]
    assert [s.attack for s in r.skipped] == ["critic"] and "critic" in r.skipped[0].reason


# -- the rules: verdict and recommendation (pure) ----------------------------------------------------------------------


def _worst(eps: float, mean: float, low: float, high: float, clean: float) -> PolicyWorstCase:
    return PolicyWorstCase(eps, [mean], ["pgd"], mean, _ci(low, high), relative_drop(clean, mean))


@pytest.mark.parametrize(
    ("worst", "level"),
    [
        ([(0.1, 480.0, 470.0, 490.0)], "ok"),  # 4% lost
        ([(0.1, 400.0, 380.0, 420.0)], "warning"),  # 20% lost, CI below the clean CI
        ([(0.1, 400.0, 200.0, 499.0)], "ok"),  # 20% lost, but the CIs overlap: within chance
        ([(0.1, 400.0, 380.0, 420.0), (0.2, 100.0, 80.0, 120.0)], "fail"),  # 80% lost at the larger eps
        ([(0.1, 240.0, 200.0, 260.0), (0.2, 100.0, 80.0, 120.0)], "fail"),  # headline: the smallest eps failing
    ],
)
def test_verdict_rule(worst: list[tuple[float, float, float, float]], level: str) -> None:
    from modelsec.audits.policy_audit import policy_verdict

    clean = EpisodeReturns([500.0], [500], 500.0, _ci(495.0, 500.0))
    cases = [_worst(e, m, lo, hi, 500.0) for e, m, lo, hi in worst]
    results = [_attack("pgd", w.eps, w.returns) for w in cases]
    verdict = policy_verdict(clean, cases, results)
    assert verdict.level == level and len(verdict.details) == len(cases)
    if level == "fail":
        first = next(w for w in cases if (w.relative_drop or 0) >= 0.5)
        assert f"at eps {first.eps:g}" in verdict.headline and "pgd" in verdict.headline
    if worst[0][1:] == (400.0, 200.0, 499.0):
        assert "within chance" in verdict.details[0]


def test_verdict_reads_negative_returns_as_losses() -> None:
    from modelsec.audits.policy_audit import policy_verdict

    clean = EpisodeReturns([-150.0], [200], -150.0, _ci(-160.0, -140.0))  # Pendulum: higher is better
    worst = _worst(0.1, -600.0, -650.0, -550.0, -150.0)
    verdict = policy_verdict(clean, [worst], [_attack("mad", 0.1, [-600.0])])
    assert verdict.level == "fail" and "300% lost" in verdict.headline


def test_recommendation_rule_and_its_notes() -> None:
    from modelsec.audits.policy_compare import policy_names, recommend_policy
    from modelsec.results.policy_audit import PolicySummary

    def summary(name: str, clean: float, worst: float, half_width: float) -> PolicySummary:
        ci = _ci(worst - half_width, worst + half_width)
        return PolicySummary(name, None, None, clean, _ci(clean - 1, clean + 1), {"0.1": 400.0, "0.2": worst},
                             {"0.1": ci, "0.2": ci}, {"0.2": "pgd"})  # fmt: skip

    base, hard, slow = (
        summary("ppo", 500.0, 20.0, 5.0),
        summary("sa-ppo", 460.0, 300.0, 50.0),
        summary("x", 449.0, 900.0, 1.0),
    )
    r = recommend_policy([base, hard, slow], baseline="ppo", max_return_drop=10)
    assert r.eps == "0.2" and r.most_robust == "sa-ppo" and r.eligible == ["ppo", "sa-ppo"]
    assert "10%" in r.excluded["x"]  # 449 is more than 10% of 500 below it
    close = summary("sa-ppo-2", 480.0, 280.0, 5.0)
    noted = recommend_policy([base, hard, close], baseline="ppo")
    assert noted.most_robust == "sa-ppo" and any("sa-ppo-2" in n and "confidence interval" in n for n in noted.notes)
    assert policy_names(["a/ppo.safetensors", "b/ppo.safetensors", "c/sa.zip"]) == ["ppo", "ppo-2", "sa"]
