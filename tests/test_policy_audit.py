"""The policy audit: its result (JSON round trip, the schema), its report (the verdict, the tables, the curves, the
animated episode), its files and run-store row, and the workflow end to end on CartPole-v1."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

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
    mean = float(np.mean(returns))
    return PolicyAttackResult(
        attack=name, eps=eps, returns=returns, steps=steps, attacked_steps=attacked, queries=[3 * s for s in steps],
        mean_return=mean, ci=_ci(min(returns), max(returns)), attacked_fraction=sum(attacked) / sum(steps),
        mean_queries=float(np.mean([3 * s for s in steps])), seconds=0.5,
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

    gif, frames, stride = episode_gif(_frames(500, (200, 30, 30)), _frames(37, (30, 30, 200)))
    assert len(gif) < 1_500_000
    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF" and image.n_frames == frames
    assert frames <= 81 and stride == 7  # ceil(500 / 80), the last step added
    assert image.size[0] == 2 * 240 + 4
    # a tiny byte budget: fewer frames and smaller panels, still a GIF
    small, few, wider = episode_gif(_frames(500, (200, 30, 30)), _frames(37, (30, 30, 200)), max_bytes=20_000)
    assert len(small) <= 20_000 and few < frames and wider > stride


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
    images = re.findall(r'src="data:image/(png|gif);base64,([A-Za-z0-9+/=]+)"', html)
    assert [kind for kind, _ in images] == ["png", "png", "gif"]
    assert base64.b64decode(images[2][1]) == gif
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "/tmp/cartpole.safetensors" in html and "a" * 64 in html


def test_report_without_frames_says_so() -> None:
    from modelsec.report.policy_audit import render_policy_audit_html

    html = render_policy_audit_html(hand_made_result())
    assert "No frames were rendered" in html and "image/gif" not in html


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
