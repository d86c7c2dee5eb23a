"""Policy files: what :func:`load_policy` reads and :func:`save_policy` writes, recognised by content.

| format                  | what it holds                                                | can run code when loaded  |
| ----------------------- | ------------------------------------------------------------ | ------------------------- |
| safetensors (modelsec)  | a built-in network's weights; the policy card in the header  | no                        |
| ``.pt2`` (torch.export) | a program returning the policy's outputs; the card inside    | a graph from the file:    |
|                         | (``extra/modelsec-policy.json``, :func:`export_policy`)      | needs ``trust_model``     |
| Stable-Baselines3 zip   | PPO, A2C, DQN, SAC (:mod:`modelsec.rl.sb3`, no unpickling)   | no (SB3's own loader, for |
|                         |                                                              | the rest: ``trust_model``)|

The policy card (JSON, under the header key :data:`POLICY_METADATA_KEY` of a safetensors file, as a classifier's
:class:`~modelsec.models.card.ModelCard` sits under ``"modelsec"``; in a ``.pt2`` archive the extra file
:data:`PT2_CARD_FILE`) records what rebuilding the policy needs and where it came from::

    {"version": 1,
     "architecture": {"arch": "actor-critic-mlp", "observation_dim": 4, "hidden": [64, 64], ...},  # safetensors
     "outputs": ["logits", "value"],                                                               # .pt2
     "observation_shape": [4], "action": {"kind": "discrete", "n": 2, "low": [], "high": []},
     "has_critic": true,
     "card": {"env_id": "CartPole-v1", "algorithm": "PPO", "training": {...}, ...}}

A policy file is untrusted data: the card is validated field by field, the weights must fit the architecture
exactly and be finite, and a pickle is never opened (a ``torch.save`` policy is refused; an SB3 archive's pickled
parts are read with ``weights_only=True`` or not at all). A ``.pt2`` program is checked and loaded as
:mod:`modelsec.models.export_safety` loads a classifier's, and on top of that only with ``trust_model=True``: a
policy file's graph is code from elsewhere that drives an agent, and the formats above need none.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError, printable
from modelsec.models.formats import ModelFormat, detect_format
from modelsec.models.torch import load_exported
from modelsec.rl.architectures import POLICY_ARCHITECTURES, build_policy_module
from modelsec.rl.policy import ActionSpec, Policy, PolicyOutput

POLICY_METADATA_KEY = "modelsec.policy"
"""The safetensors header key of the policy card (JSON)."""
PT2_CARD_FILE = "modelsec-policy.json"
"""The extra file of a ``.pt2`` archive that holds the policy card (``torch.export.save(..., extra_files=...)``,
stored as ``<archive>/extra/modelsec-policy.json``)."""
CARD_VERSION = 1
OUTPUT_NAMES = ("logits", "mean", "log_std", "value")
"""What a ``.pt2`` policy program may return, in the order its card's ``outputs`` names them."""
_MAX_CARD_BYTES = 1024 * 1024
_STRUCTURE_KEYS = ("format", "architecture")  # card keys a file's own structure decides


class PolicyFormatError(ModelLoadError):
    """A policy file that cannot be read, or whose contents do not fit together (exit code 2)."""


class UnsupportedPolicyError(PolicyFormatError):
    """A well-formed policy file that the safe reader cannot rebuild (an SB3 feature it does not know); with
    ``trust_model=True`` it may be loaded by its own library instead."""


# -- writing -------------------------------------------------------------------------------------------------------


def _card_json(header: dict[str, Any]) -> str:
    try:
        return json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"the policy card must be plain JSON (finite numbers, strings, lists, objects): {e}"
        ) from None


def _free_card(policy: Policy) -> dict[str, Any]:
    return {k: v for k, v in policy.card.items() if k not in _STRUCTURE_KEYS}


def save_policy(policy: Policy, path: str | Path) -> None:
    """Save ``policy`` as safetensors: its module's weights, and in the header (key :data:`POLICY_METADATA_KEY`)
    the policy card: the architecture's config, the observation shape, the action space, whether it has a critic,
    and its own card (environment id, algorithm, training settings). Only the built-in networks
    (:mod:`modelsec.rl.architectures`) can be saved this way; :func:`export_policy` writes any module."""
    config = getattr(policy.module, "config", None)
    if not isinstance(config, dict) or config.get("arch") not in POLICY_ARCHITECTURES:
        raise ConfigError(
            f"only the built-in policy networks ({', '.join(POLICY_ARCHITECTURES)}) can be saved as safetensors; "
            f"this policy's module is a {type(policy.module).__name__} (export it with export_policy)"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in policy.module.state_dict().items()}
    expected = build_policy_module(config, policy.action).state_dict()
    if state.keys() != expected.keys() or any(state[k].shape != expected[k].shape for k in state):
        raise ConfigError(f"the module's weights do not fit its recorded architecture {config.get('arch')!r}")
    header = {
        "version": CARD_VERSION,
        "architecture": config,
        "observation_shape": list(policy.observation_shape),
        "action": policy.action.to_dict(),
        "has_critic": bool(policy.has_critic),
        "card": _free_card(policy),
    }
    save_file(state, str(path), metadata={POLICY_METADATA_KEY: _card_json(header)})


class _OutputsAsTuple(nn.Module):
    """A policy module whose ``PolicyOutput`` fields ``outputs`` come back as a tuple (what ``torch.export``
    programs return)."""

    def __init__(self, module: nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.outputs = outputs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(obs)
        return tuple(getattr(out, name) for name in self.outputs)


def export_policy(policy: Policy, path: str | Path) -> None:
    """Save ``policy`` as a ``torch.export`` program (``.pt2``, any batch size) that returns the fields of its
    output as a tuple, with the policy card (its ``outputs`` naming them) as the extra file
    :data:`PT2_CARD_FILE`."""
    example = torch.zeros((2, *policy.observation_shape))
    with torch.no_grad():
        probe = policy.module(example)
    outputs = tuple(name for name in OUTPUT_NAMES if getattr(probe, name) is not None)
    header = {
        "version": CARD_VERSION,
        "outputs": list(outputs),
        "observation_shape": list(policy.observation_shape),
        "action": policy.action.to_dict(),
        "has_critic": bool(policy.has_critic),
        "card": _free_card(policy),
    }
    text = _card_json(header)
    wrapper = _OutputsAsTuple(policy.module, outputs).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={PT2_CARD_FILE: text})


# -- reading -------------------------------------------------------------------------------------------------------


def load_policy(path: str | Path, *, trust_model: bool = False) -> Policy:
    """The policy in the file at ``path``, by its content: a safetensors file written by :func:`save_policy`, a
    Stable-Baselines3 ``.zip`` (read without unpickling, :mod:`modelsec.rl.sb3`; with ``trust_model`` one the safe
    reader cannot rebuild goes to SB3's own loader), or a ``.pt2`` program with a policy card (only with
    ``trust_model``).

    Raises :class:`PolicyFormatError` for a file that is not a readable policy,
    :class:`~modelsec.core.errors.UnsafeModelError` for one refused as unsafe (both exit with code 2)."""
    from modelsec.rl import sb3

    p = Path(path)
    where = repr(str(p))
    if not p.is_file():
        raise PolicyFormatError(f"policy file {where} does not exist or is not a file")
    if sb3.is_sb3_archive(p):
        try:
            return sb3.read_sb3(p)
        except UnsupportedPolicyError:
            if not trust_model:
                raise
            return sb3.load_trusted_sb3(p)
    if sb3.looks_like_sb3(p):
        raise PolicyFormatError(f"{where} looks like a Stable-Baselines3 archive but is truncated or corrupt")
    try:
        fmt = detect_format(p)
    except ModelLoadError as e:
        raise PolicyFormatError(f"{where} is not a policy file modelsec reads ({e}); {_KNOWN}") from None
    if fmt is ModelFormat.SAFETENSORS:
        return _read_safetensors(p, where)
    if fmt is ModelFormat.TORCH_EXPORT:
        if not trust_model:
            raise UnsafeModelError(
                f"{where} is a torch.export program (.pt2): loading it runs a graph from the file (checked by "
                "modelsec, yet code from elsewhere), so a .pt2 policy is loaded only with --trust-model; "
                "save_policy's safetensors and Stable-Baselines3 .zip files need no trust"
            )
        return _read_exported(p, where)
    if fmt.uses_pickle:
        raise UnsafeModelError(
            f"{where} is a pickle-based file ({fmt.value}), which can run code when unpickled; modelsec does not read "
            f"policies from pickles. {_KNOWN}"
        )
    raise PolicyFormatError(f"{where} is a {fmt.value} file, not a policy; {_KNOWN}")


_KNOWN = (
    "policies are read from safetensors files written by modelsec, Stable-Baselines3 .zip files (PPO, A2C, DQN, "
    "SAC) and, with --trust-model, torch.export programs (.pt2) holding a policy card"
)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], where: str, *, unsupported: bool = False) -> None:
    """Load ``state`` into ``module`` strictly: the same names, the same shapes, finite values; otherwise a
    :class:`PolicyFormatError` (:class:`UnsupportedPolicyError` with ``unsupported``: weights of a network the
    reader does not rebuild) naming the differences."""
    error = UnsupportedPolicyError if unsupported else PolicyFormatError
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:5]}"] if missing else []
        parts += [f"unexpected {unexpected[:5]}"] if unexpected else []
        parts += [f"wrong shapes {wrong[:3]}"] if wrong else []
        raise error(f"{where}: the weights do not fit the policy network ({printable('; '.join(parts), 600)})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PolicyFormatError(f"{where}: the weights {bad[:5]} hold NaN or infinite values")
    module.load_state_dict(state, strict=True)


def _field(header: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = header.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise PolicyFormatError(f"{where} has a malformed policy card: {key!r} is {printable(repr(value), 80)}")
    return value


def _parse_card(text: str, where: str) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise PolicyFormatError(f"{where} has a corrupt policy card (not JSON: {printable(e)})") from None
    if not isinstance(header, dict):
        raise PolicyFormatError(f"{where} has a malformed policy card: not a JSON object")
    version = _field(header, "version", int, where)
    if version > CARD_VERSION:
        raise PolicyFormatError(f"{where} has a policy card of version {version}; this modelsec reads {CARD_VERSION}")
    return header


def _shape_and_action(header: dict[str, Any], where: str) -> tuple[tuple[int, ...], ActionSpec]:
    shape = _field(header, "observation_shape", list, where)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise PolicyFormatError(
            f"{where} has a malformed policy card: observation_shape is {printable(repr(shape), 80)}"
        )
    action = _field(header, "action", dict, where)
    try:
        kind, n = action.get("kind"), action.get("n", 0)
        low, high = action.get("low", []), action.get("high", [])
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*low, *high))
        if kind not in ("discrete", "continuous") or not isinstance(n, int) or not numbers:
            raise ConfigError(f"the action space {printable(repr(action), 120)}")
        spec = ActionSpec(kind, n=n, low=tuple(map(float, low)), high=tuple(map(float, high)))
    except (ConfigError, TypeError) as e:
        raise PolicyFormatError(f"{where} has a malformed policy card: {e}") from None
    return tuple(shape), spec


def _read_safetensors(p: Path, where: str) -> Policy:
    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise PolicyFormatError(
            f"cannot read the safetensors file {where} (truncated or corrupt?): {printable(e)}"
        ) from None
    if POLICY_METADATA_KEY not in metadata:
        raise PolicyFormatError(
            f"{where} records no policy card (it is not a policy saved by modelsec; a classifier's weights?)"
        )
    header = _parse_card(metadata[POLICY_METADATA_KEY], where)
    shape, action = _shape_and_action(header, where)
    config = _field(header, "architecture", dict, where)
    has_critic = _field(header, "has_critic", bool, where)
    card = _field(header, "card", dict, where)
    if config.get("observation_dim") != math.prod(shape):
        raise PolicyFormatError(
            f"{where}: the architecture's observation_dim does not fit the observation shape {shape}"
        )
    try:
        module = build_policy_module(config, action)
    except ConfigError as e:
        raise PolicyFormatError(f"{where} records an architecture this modelsec cannot build: {e}") from None
    load_weights(module, tensors, where)
    return Policy(
        module, shape, action, has_critic=has_critic, card={**card, "format": "safetensors", "architecture": config}
    )


class ExportedPolicyModule(nn.Module):
    """A ``torch.export`` program returning a policy's outputs (one tensor, or a tuple named by the card's
    ``outputs``) as a module returning a :class:`PolicyOutput` (a ``(B, 1)`` value is squeezed)."""

    def __init__(self, graph: nn.Module, outputs: tuple[str, ...], fixed_batch: int | None) -> None:
        super().__init__()
        self.graph = graph
        self.outputs = outputs
        self.fixed_batch = fixed_batch

    def train(self, mode: bool = True) -> ExportedPolicyModule:
        self.training = mode  # the exported graph's behaviour is fixed at export time
        return self

    def _run(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.graph(obs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        size = self.fixed_batch
        if size is None or obs.shape[0] == size:
            parts = self._run(obs)
        else:  # a program exported for one batch size: fed in chunks of it, the last padded
            chunks = []
            for i in range(0, obs.shape[0], size):
                chunk = obs[i : i + size]
                n = chunk.shape[0]
                padded = torch.cat([chunk, chunk.new_zeros((size - n, *chunk.shape[1:]))]) if n < size else chunk
                chunks.append(tuple(t[:n] for t in self._run(padded)))
            parts = tuple(torch.cat(ts) for ts in zip(*chunks, strict=True))
        if len(parts) != len(self.outputs) or not all(isinstance(t, torch.Tensor) for t in parts):
            raise PolicyFormatError(f"the policy program returned {len(parts)} outputs, its card names {self.outputs}")
        out = dict(zip(self.outputs, parts, strict=True))
        value = out.get("value")
        if value is not None and value.ndim == 2 and value.shape[1] == 1:
            out["value"] = value.squeeze(1)
        return PolicyOutput(**out)


def _pt2_card(p: Path, where: str) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(p) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{PT2_CARD_FILE}")]
            if not names:
                raise PolicyFormatError(
                    f"{where} is a torch.export program without a policy card (extra/{PT2_CARD_FILE}); write it with "
                    "modelsec.rl.files.export_policy, or torch.export.save(program, path, extra_files="
                    f"{{{PT2_CARD_FILE!r}: card}}) with the card's observation_shape, action, outputs and has_critic"
                )
            info = archive.getinfo(names[0])
            if info.file_size > _MAX_CARD_BYTES:
                raise UnsafeModelError(f"{where}: refused: its policy card claims {info.file_size} bytes")
            with archive.open(info) as f:
                raw = f.read(_MAX_CARD_BYTES + 1)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise PolicyFormatError(f"{where} is not a readable torch.export archive: {printable(e)}") from None
    try:
        return _parse_card(raw[:_MAX_CARD_BYTES].decode("utf-8"), where)
    except UnicodeDecodeError:
        raise PolicyFormatError(f"{where} has a corrupt policy card (not UTF-8)") from None


def _read_exported(p: Path, where: str) -> Policy:
    header = _pt2_card(p, where)
    shape, action = _shape_and_action(header, where)
    has_critic = _field(header, "has_critic", bool, where)
    card = _field(header, "card", dict, where)
    default = ["logits"] if action.kind == "discrete" else ["mean"]
    outputs = header.get("outputs", default)
    head = "logits" if action.kind == "discrete" else "mean"
    if (
        not isinstance(outputs, list)
        or not all(o in OUTPUT_NAMES for o in outputs)
        or len(set(outputs)) != len(outputs)
        or head not in outputs
        or ("value" in outputs) != has_critic
    ):
        raise PolicyFormatError(
            f"{where} has a malformed policy card: outputs {printable(repr(outputs), 80)} (names of {OUTPUT_NAMES}, "
            f"with {head!r} for a {action.kind} policy, and 'value' exactly when has_critic)"
        )
    exported = load_exported(p)  # modelsec.models.export_safety's checks, then the guarded load
    module = ExportedPolicyModule(exported.graph_module, tuple(outputs), exported.fixed_batch)
    _probe(module, shape, action, where)
    return Policy(module, shape, action, has_critic=has_critic, card={**card, "format": "torch-export"})


def _probe(module: nn.Module, shape: tuple[int, ...], action: ActionSpec, where: str) -> None:
    """Run the program once on zeros: its outputs must have the shapes its card promises."""
    batch = 2
    try:
        with torch.no_grad():
            out = module(torch.zeros((batch, *shape)))
    except PolicyFormatError:
        raise
    except Exception as e:  # a program that does not take the card's observations
        raise PolicyFormatError(
            f"{where}: the program does not run on observations of shape {shape}: {printable(e, 200)}"
        ) from None
    expected = {"logits": (batch, action.dim), "mean": (batch, action.dim), "value": (batch,)}
    for name, want in expected.items():
        got = getattr(out, name)
        if got is not None and tuple(got.shape) != want:
            raise PolicyFormatError(f"{where}: the program's {name} has shape {tuple(got.shape)}, expected {want}")
    if out.log_std is not None and out.log_std.shape[-1] != action.dim:
        raise PolicyFormatError(f"{where}: the program's log_std has shape {tuple(out.log_std.shape)}")


def read_policy_card(path: str | Path) -> dict[str, Any]:
    """The policy card of a safetensors policy file (cheap: the header only); ``{}`` when it records none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}
    text = metadata.get(POLICY_METADATA_KEY)
    return {} if text is None else _parse_card(text, repr(str(path)))


__all__ = [
    "CARD_VERSION",
    "POLICY_METADATA_KEY",
    "PT2_CARD_FILE",
    "ExportedPolicyModule",
    "PolicyFormatError",
    "UnsupportedPolicyError",
    "export_policy",
    "load_policy",
    "load_weights",
    "read_policy_card",
    "save_policy",
]
