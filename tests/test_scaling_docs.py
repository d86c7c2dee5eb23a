"""The scale-out promises of the README ("Scaling out on Ray") and of docs/scaling.md, run as written.

- ``modelsec audit --executor ray --reference-models 8 ...`` runs (on the session's local Ray instance, which the
  executor joins as it would join a cluster) and writes the numbers of the same audit run locally in this process,
  bit for bit (the reference models are not cached here: ``--no-store``, so both runs train all eight);
- ``--ray-address`` without ``--executor ray`` is a user error (exit 2) that says what to add;
- every option that a ``modelsec`` command line in docs/scaling.md uses is an option of that command, so the page
  cannot drift from the CLI.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest

from modelsec.cli.main import cli, main

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(__file__).parent / "data" / "golden-digits-mlp.safetensors"
SCALING = ROOT / "docs" / "scaling.md"
README = ROOT / "README.md"
VOLATILE = {"run_id", "created_at", "timings", "versions", "seconds", "path", "adversarial_file"}
"""What differs between two runs of the same audit (ids, dates, durations, paths) or names where it ran."""
WHERE = {"executor", "workers", "ray_address", "cpus_per_task", "gpus_per_task"}

AUDIT = ["--attacks", "fgsm", "--no-checks", "--eps", "0.1", "--samples", "20", "--mia-samples", "80",
         "--reference-models", "8", "--reference-epochs", "2", "--seed", "2", "--no-store", "--quiet"]  # fmt: skip


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE | WHERE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def audit(out: Path, *where: str) -> dict[str, Any]:
    main(["audit", "--model", str(MODEL), *AUDIT, *where, "--out", str(out)])
    return dict(json.loads((out / "result.json").read_text()))


def test_readme_ray_audit_gives_the_local_numbers(ray_instance: Any, tmp_path: Path) -> None:
    on_ray = audit(tmp_path / "ray", "--executor", "ray")
    local = audit(tmp_path / "local", "--workers", "1")
    compute = on_ray["privacy"]["compute"]
    assert compute["executor"] == "ray" and local["privacy"]["compute"]["executor"] == "local"
    assert compute["reference_models"] == 8 and not compute["from_cache"]
    attacks = {a["attack"] for a in on_ray["privacy"]["attacks"]}
    assert {"lira", "rmia"} <= attacks  # the attacks the reference models are for ran
    assert stable(on_ray) == stable(local)


def test_ray_address_needs_the_ray_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--model", str(MODEL), "--ray-address", "auto", "--out", str(tmp_path / "out"), "--no-store"])
    assert exc.value.code == 2
    assert "--executor ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def documented_commands(path: Path) -> list[list[str]]:
    """The ``modelsec ...`` command lines of the page's shell blocks (continuation lines joined, comments and
    environment assignments dropped)."""
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words[:1] == ["modelsec"]:
                commands.append(words[1:])
    return commands


def options_of(command: str) -> set[str]:
    group = cli
    assert isinstance(group, click.Group)
    sub = group.commands[command]
    params = sub.get_params(click.Context(sub))  # with the options generated from the config dataclasses
    return {opt for param in params for opt in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("path", [SCALING, README], ids=["docs/scaling.md", "README.md"])
def test_documented_scale_out_options_exist(path: Path) -> None:
    commands = [c for c in documented_commands(path) if "--executor" in c or path == SCALING]
    assert commands, f"{path.name} shows no modelsec command that uses --executor"
    for words in commands:
        options = options_of(words[0])
        used = {w.split("=")[0] for w in words[1:] if w.startswith("--")}
        assert used <= options, f"{path.name}: modelsec {words[0]} has no option {sorted(used - options)}"
