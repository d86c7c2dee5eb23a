"""The command line's options generated from the config dataclasses (:mod:`modelsec.cli.config_options`).

Every field of every config is an option with the field's type, choices and documented help; a new defense's field
is an option of ``harden`` and ``audit-dp`` without touching the CLI; the values given reach the configs the
workflows get; and every option the command line had when its options were written by hand keeps its name, type,
default and checks (``tests/data/cli_options.jsonl``, written from the hand-written CLI).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, ClassVar

import click
import pytest

import modelsec.audits
import modelsec.audits.compare
import modelsec.audits.dp_audit
import modelsec.defenses
import modelsec.defenses.training
import modelsec.outputs.audit
import modelsec.outputs.compare
import modelsec.outputs.dp_audit
from modelsec.audits import AuditConfig
from modelsec.audits.dp_audit import DPAuditOptions, run_dp_audit
from modelsec.cli.config_options import field_docs, field_options
from modelsec.cli.main import cli, main
from modelsec.core.options import COUNT, OneOf
from modelsec.defenses import DEFENSES, Defense, DefenseConfig, Guarantees, make_defense
from modelsec.defenses.membership import OutputHardeningConfig
from modelsec.defenses.training import TrainingConfig

PINNED = Path(__file__).parent / "data" / "cli_options.jsonl"


def params(command: str) -> dict[str, click.Parameter]:
    """The parameters of ``modelsec COMMAND`` (``runs list``: a subcommand), by name."""
    cmd: Any = cli
    for name in command.split():
        cmd = cmd.commands[name]
    return {p.name: p for p in cmd.get_params(click.Context(cmd)) if p.name}


def run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    with pytest.raises(SystemExit) as e:
        main(list(argv))
        raise SystemExit(0)
    return int(e.value.code or 0)


def capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, returns: Any = None) -> dict[str, Any]:
    """Replace the workflow ``module.name`` by one that records its arguments (``"args"``, and by keyword)."""
    seen: dict[str, Any] = {}

    def workflow(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, args=args)
        return returns

    monkeypatch.setattr(module, name, workflow)
    return seen


def defense_configs() -> dict[str, type[DefenseConfig]]:
    return {name: DEFENSES.get(name).config_class for name in DEFENSES.names()}


# ---------------------------------------------------------------- the options are the configs' fields


def test_every_field_of_every_config_is_an_option() -> None:
    expected = {
        "audit": [f for f in dataclasses.fields(AuditConfig) if f.name != "split_seed"],  # --split-seed: data option
        "compare": [f for f in dataclasses.fields(AuditConfig) if f.name != "split_seed"],
        "train": list(dataclasses.fields(TrainingConfig)),
        "harden": [f for config in defense_configs().values() for f in dataclasses.fields(config)],
        "audit-dp": [f for c in (DPAuditOptions, *defense_configs().values()) for f in dataclasses.fields(c)],
    }
    for command, fields in expected.items():
        options = params(command)
        for f in fields:
            name = f"no_{f.name}" if command in ("audit", "compare") and f.name == "checks" else f.name
            assert name in options, (command, f.name)
            assert f"--{name.replace('_', '-')}" in options[name].opts, (command, f.name)
    assert params("harden")["random_start"].secondary_opts == ["--no-random-start"]  # unset: either way
    assert params("audit")["no_checks"].is_flag  # on by default: a flag turns it off


def test_types_choices_ranges_and_help_come_from_the_fields() -> None:
    options = params("harden")
    assert isinstance(options["norm"].type, click.Choice) and list(options["norm"].type.choices) == ["linf", "l2"]
    assert isinstance(options["epochs"].type, click.IntRange) and options["epochs"].type.min == 1
    assert options["l2_norm_clip"].type is click.FLOAT and options["num_microbatches"].type is click.INT
    assert options["optimizer"].type is click.STRING  # no marker: the config checks it (a ConfigError)
    assert all(options[f.name].default is None for f in dataclasses.fields(OutputHardeningConfig))
    # help: the Args: entry, prefixed by the defenses that have the field, each defense's own text where it differs
    assert options["decimals"].help == "output-hardening: " + field_docs(OutputHardeningConfig)["decimals"]
    assert options["epochs"].help is not None and "dp-sgd: passes of n // batch_size steps" in options["epochs"].help
    audit = params("audit")
    assert audit["eps"].default == "0.03,0.1" and audit["samples"].default == AuditConfig().samples
    assert audit["pgd_steps"].help == audit["pgd_restarts"].help  # one entry, two fields
    assert list(audit["preset"].type.choices) == ["quick", "standard", "thorough"]  # type: ignore[attr-defined]


def test_field_docs_read_google_style_args_sections() -> None:
    docs = field_docs(OutputHardeningConfig)
    assert docs["decimals"] == "rounding's decimals, 1 to 6 (default 2)."  # the paragraph after Args: is not in it
    assert docs["epochs"] == field_docs(TrainingConfig)["epochs"]  # inherited from a base class's docstring
    assert field_docs(AuditConfig)["preset"].endswith("see modelsec.audits.presets.")  # roles and ``literals`` plain
    for config in (AuditConfig, TrainingConfig, DPAuditOptions, *defense_configs().values()):
        assert set(field_docs(config)) >= {f.name for f in dataclasses.fields(config)}, config


def test_the_options_keep_their_names_types_defaults_and_checks() -> None:
    """Every option of the hand-written CLI (pinned in tests/data/cli_options.jsonl) is still there, the same."""
    pinned = [json.loads(line) for line in PINNED.read_text().splitlines()]
    assert len(pinned) > 100
    for row in pinned:
        p = params(row["command"])[row["name"]]
        got = {
            "opts": p.opts,
            "secondary_opts": p.secondary_opts,
            "type": p.type.to_info_dict(),
            "default": "UNSET" if type(p.default).__name__ == "Sentinel" else p.default,
            "required": p.required,
            "is_flag": getattr(p, "is_flag", False),
            "multiple": p.multiple,
            "nargs": p.nargs,
            "callback": p.callback is not None,
        }
        assert json.loads(json.dumps(got)) == {k: row[k] for k in got}, (row["command"], row["name"])


def test_dp_audit_options_are_run_dp_audits_keywords() -> None:
    signature = inspect.signature(run_dp_audit).parameters
    for f in dataclasses.fields(DPAuditOptions):
        assert signature[f.name].default == f.default, f.name


# ---------------------------------------------------------------- a new defense needs no CLI change


@dataclass(frozen=True, kw_only=True)
class SmoothingConfig(DefenseConfig):
    """A defense made up for this test.

    Args:
        smoothing_radius: how far the made-up defense smooths, in input units.
        smoothing_kind: "box" or "gauss".
        passes: smoothing passes.
    """

    defense_name: ClassVar[str] = "smoothing-test"
    smoothing_radius: float = 0.5
    smoothing_kind: Annotated[str, OneOf("box", "gauss")] = "box"
    passes: Annotated[int, COUNT] = 2


class Smoothing(Defense):
    name = "smoothing-test"
    config_class = SmoothingConfig

    def guarantees(self) -> Guarantees:
        return Guarantees(kind="none", summary="a test")


@pytest.fixture
def smoothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Smoothing registered for one test (the registry has no way to unregister: the fixture restores it)."""
    monkeypatch.setitem(DEFENSES._items, "smoothing-test", Smoothing)


def test_a_registered_defense_s_fields_appear_in_harden_and_audit_dp(
    smoothing: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for command in ("harden", "audit-dp"):
        assert run(monkeypatch, command, "--help") == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert "--smoothing-radius FLOAT" in shown and "--smoothing-kind [box|gauss]" in shown, command
        assert "smoothing-test: how far the made-up defense smooths, in input units." in shown
        assert "--passes INTEGER RANGE" in shown

    seen = capture(monkeypatch, modelsec.defenses, "harden", returns={"stop_reason": None})
    out = str(tmp_path / "m.safetensors")
    argv = ["harden", "--defense", "smoothing-test", "--smoothing-radius", "0.25", "--passes", "3", "--out", out, "-q"]
    assert run(monkeypatch, *argv) == 0
    assert seen["args"] == ("smoothing-test",)
    assert (seen["config"].smoothing_radius, seen["config"].passes, seen["config"].smoothing_kind) == (0.25, 3, "box")
    for bad, message in [("--smoothing-kind", "'tophat' is not one of 'box', 'gauss'"), ("--passes", "x>=1")]:
        assert run(monkeypatch, *argv[:-3], bad, "tophat" if bad == "--smoothing-kind" else "0", "--out", out) == 2
        assert message in capsys.readouterr().err
    assert run(monkeypatch, "harden", "--defense", "pgd-at", "--smoothing-radius", "1", "--out", out) == 2
    assert "pgd-at has no option 'smoothing_radius'" in capsys.readouterr().err


def test_a_config_the_cli_cannot_show_is_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True, kw_only=True)
    class Undocumented(SmoothingConfig):
        """A field without an Args: entry.

        Args:
            smoothing_radius: documented again.
        """

        window: int = 3

    with pytest.raises(TypeError, match=r"Undocumented.window has no entry in the Args: section"):
        field_options({"smoothing-test": Undocumented})

    @dataclass(frozen=True, kw_only=True)
    class Clashing(DefenseConfig):
        """A field of another type than another config's field of that name.

        Args:
            eps: an eps of another type than adversarial training's.
        """

        eps: str = "small"

    with pytest.raises(TypeError, match=r"'eps'.*differ in type"):
        field_options({"pgd-at": defense_configs()["pgd-at"], "clash": Clashing})

    @dataclass(frozen=True, kw_only=True)
    class Shadowing(DefenseConfig):
        """A field named like a command's own option.

        Args:
            out: the same name as ``--out``.
        """

        out: str = "x"

    monkeypatch.setattr(Smoothing, "config_class", Shadowing)
    monkeypatch.setitem(DEFENSES._items, "smoothing-test", Smoothing)
    with pytest.raises(TypeError, match="shadows one of the command's options"):
        params("harden")


# ---------------------------------------------------------------- the values reach the configs


def test_audit_and_compare_options_build_the_audit_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    seen = capture(monkeypatch, modelsec.outputs.audit, "audit_and_write")
    assert run(monkeypatch, "audit", "--no-store", "-q", "--out", out) == 0
    assert seen["config"] == AuditConfig() and seen["args"] == (None, None) and seen["resume"] is True
    given = ["--eps", "0.05,0.2", "--norm", "l2", "--attacks", "pgd, fgsm", "--pgd-steps", "3", "--no-checks",
             "--seed", "7", "--split-seed", "4", "--workers", "2", "--reference-epochs", "5", "--membership-attacks",
             "loss-threshold,entropy", "--samples", "9", "--mia-samples", "11", "--preset", "quick"]  # fmt: skip
    expected = AuditConfig(
        eps=(0.05, 0.2), norm="l2", attacks=("pgd", "fgsm"), pgd_steps=3, checks=False, seed=7, split_seed=4,
        workers=2, reference_epochs=5, membership_attacks=("loss-threshold", "entropy"), samples=9, mia_samples=11,
        preset="quick",
    )  # fmt: skip
    assert run(monkeypatch, "audit", *given, "--no-store", "-q", "--out", out) == 0
    assert seen["config"] == expected
    seen = capture(monkeypatch, modelsec.outputs.compare, "compare_and_write")
    assert run(monkeypatch, "compare", "a.safetensors", "b.safetensors", *given, "--no-store", "-q", "--out", out) == 0
    assert seen["config"] == expected and seen["baseline"] == "a.safetensors" and seen["hardened"] == ("b.safetensors",)


def test_train_options_build_the_training_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = str(tmp_path / "m.safetensors")
    seen = capture(monkeypatch, modelsec.defenses.training, "train_and_save")
    assert run(monkeypatch, "train", "--data", "digits", "--out", out, "-q") == 0
    assert seen["config"] == TrainingConfig() and seen["split_seed"] == 0 and seen["members"] is None
    argv = ["--epochs", "3", "--lr-schedule", "constant", "--seed", "9", "--lr", "0.01", "--members", "5"]
    assert run(monkeypatch, "train", "--data", "digits", *argv, "--out", out, "-q") == 0
    assert seen["config"] == TrainingConfig(epochs=3, lr_schedule="constant", seed=9, lr=0.01)
    assert seen["members"] == 5


def test_harden_options_override_config_json_and_leave_the_defense_s_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = str(tmp_path / "m.safetensors")
    seen = capture(monkeypatch, modelsec.defenses, "harden", returns={"stop_reason": None})
    for name in DEFENSES.names():
        assert run(monkeypatch, "harden", "--defense", name, "--out", out, "-q") == 0
        assert seen["config"] == make_defense(name).config, name
    json_options = '{"eps": 0.2, "steps": 3, "random_start": true}'
    argv = ["--defense", "pgd-at", "--config-json", json_options, "--eps", "0.1", "--no-random-start"]
    assert run(monkeypatch, "harden", *argv, "--out", out, "-q") == 0
    assert seen["config"] == make_defense("pgd-at", {"eps": 0.1, "steps": 3, "random_start": False}).config


def test_audit_dp_seed_seeds_the_canaries_and_the_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result = SimpleNamespace(passed=True, claimed_epsilon=None, verdict=lambda: "no claim")
    seen = capture(monkeypatch, modelsec.outputs.dp_audit, "dp_audit_and_write", returns=(result, {}))
    argv = ["audit-dp", "--seed", "5", "--canaries", "10", "--canary-kind", "out-of-distribution", "-q",
            "--noise-multiplier", "2", "--config-json", '{"seed": 1, "epochs": 2}', "--out", str(tmp_path)]  # fmt: skip
    assert run(monkeypatch, *argv) == 0
    assert (seen["seed"], seen["canaries"], seen["canary_kind"], seen["score"], seen["correction"]) == (
        5, 10, "out-of-distribution", "scaled-logit", "none",
    )  # fmt: skip
    assert seen["config"] == make_defense("dp-sgd", {"seed": 5, "epochs": 2, "noise_multiplier": 2.0}).config


def test_the_command_line_imports_no_config_until_a_command_is_parsed() -> None:
    """`modelsec --help`, `list` and `runs` start in a tenth of a second: the configs (and torch) load only for a
    command that has their options."""
    code = (
        "import sys; from click.testing import CliRunner; from modelsec.cli.main import cli; "
        "CliRunner().invoke(cli, ['--help']); print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
