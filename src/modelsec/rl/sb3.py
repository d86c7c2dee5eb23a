"""Stable-Baselines3 ``.zip`` files read without unpickling anything.

Threat model: the file is written by an attacker. SB3's own loader (``stable_baselines3.PPO.load``) unpickles the
archive's ``data`` entries with cloudpickle, which runs any code they hold; this reader never does. What an SB3
2.x archive holds, and what is read of it:

- ``data``: JSON. The entries that are not JSON (the policy class, the spaces, schedules, ...) are objects with a
  ``":serialized:"`` value (base64 cloudpickle) and, beside it, readable copies of their first-level attributes
  (a space's ``_shape``, ``dtype``, ``n``, ``low``, ``high`` written as text). Only those readable keys are used;
  a ``":serialized:"`` value is never unpickled. The policy class is the one exception that is looked at: its
  pickle's opcodes are listed (:mod:`pickletools`, which executes nothing) for the module and name of the class it
  references, the way :func:`modelsec.models.formats.pickled_class` reads a file's top-level class.
- ``policy.pth``: the policy's state dict (a ``torch.save`` file), read with ``torch.load(..., weights_only=True)``,
  whose unpickler builds tensors and containers only; anything else in it is refused.
- everything else (``pytorch_variables.pth``, optimizer states, ``system_info.txt``) is not read.

The archive itself is checked first: a bounded number of members with plain names (no folders, no ``..``), only
the kinds SB3 writes (``.pth`` files, ``data``, the version and system-info texts), sizes bounded (so a
decompression bomb costs nothing; :data:`MAX_DATA_BYTES`, :data:`MAX_WEIGHTS_BYTES`).

Supported: the ``MlpPolicy`` of PPO and A2C (``ActorCriticPolicy``: discrete or continuous actions, any
``net_arch``, separate or shared layers), DQN (``DQNPolicy``) and SAC (``SACPolicy``), over ``Box`` observations,
with the activations of :data:`~modelsec.rl.architectures.ACTIVATIONS`. The network is rebuilt as a built-in
architecture (:mod:`modelsec.rl.architectures`) whose parameter names are SB3's: the layer sizes come from the
weights' shapes, the activation from the readable ``policy_kwargs`` (or the algorithm's default when none is
recorded), and the weights must fit it exactly. Anything else (CNN or multi-input policies, image observations,
generalized state-dependent exploration, unknown ``policy_kwargs``, other algorithms) raises
:class:`~modelsec.rl.files.UnsupportedPolicyError`; with ``trust_model=True`` such a file is handed to SB3's own
loader instead (:func:`load_trusted_sb3`), which unpickles it.

Not in the archive, so not applied: the observation normalisation of a ``VecNormalize`` wrapper (SB3 saves its
statistics in a separate pickle); a policy trained behind one expects normalised observations.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import UnsafeModelError, printable
from modelsec.rl.architectures import ActorCriticMLP, QNetworkMLP, SquashedGaussianActorCritic
from modelsec.rl.files import PolicyFormatError, UnsupportedPolicyError, load_weights
from modelsec.rl.policy import ActionSpec, Policy, PolicyOutput

MAX_MEMBERS = 64
"""The most members an SB3 archive may have (SB3 writes at most 8)."""
MAX_DATA_BYTES = 64 * 1024 * 1024
"""The largest ``data`` entry read (uncompressed)."""
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024
"""The largest ``policy.pth`` read (uncompressed), and the most its own members may hold together."""

_TEXT_MEMBERS = frozenset({"data", "_stable_baselines3_version", "system_info.txt"})
_TORCH_MEMBER = re.compile(r"[A-Za-z0-9_.-]+\.pth")

_ACTOR_CRITIC = "stable_baselines3.common.policies.ActorCriticPolicy"
_DQN = "stable_baselines3.dqn.policies.DQNPolicy"
_SAC = "stable_baselines3.sac.policies.SACPolicy"
_DEFAULT_ACTIVATION = {_ACTOR_CRITIC: "tanh", _DQN: "relu", _SAC: "relu"}
_ACTIVATION_CLASSES = {
    "Tanh": "tanh",
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "ELU": "elu",
    "SiLU": "silu",
    "GELU": "gelu",
    "Sigmoid": "sigmoid",
}
# policy_kwargs that do not change what the trained network computes (optimisation and initialisation settings),
# and those this reader checks itself; any other key is refused
_HARMLESS_KWARGS = frozenset(
    {"optimizer_class", "optimizer_kwargs", "ortho_init", "log_std_init", "share_features_extractor", "lr_schedule"}
)
_CHECKED_KWARGS = frozenset(
    {"net_arch", "activation_fn", "use_sde", "squash_output", "features_extractor_class", "features_extractor_kwargs",
     "normalize_images", "n_critics", "full_std", "use_expln", "clip_mean"}
)  # fmt: skip
# the SB3 classes known to be outside what this reader rebuilds, by algorithm (SB3's own loader reads them)
_OTHER_CLASSES = {
    "stable_baselines3.common.policies.ActorCriticCnnPolicy": "PPO/A2C",
    "stable_baselines3.common.policies.MultiInputActorCriticPolicy": "PPO/A2C",
    "stable_baselines3.dqn.policies.CnnPolicy": "DQN",
    "stable_baselines3.dqn.policies.MultiInputPolicy": "DQN",
    "stable_baselines3.sac.policies.CnnPolicy": "SAC",
    "stable_baselines3.sac.policies.MultiInputPolicy": "SAC",
    "stable_baselines3.td3.policies.TD3Policy": "TD3",
    "stable_baselines3.td3.policies.CnnPolicy": "TD3",
    "stable_baselines3.td3.policies.MultiInputPolicy": "TD3",
}


def _format_error(where: str, message: str) -> PolicyFormatError:
    return PolicyFormatError(f"{where}: {message}")


def _unsupported(where: str, message: str) -> UnsupportedPolicyError:
    return UnsupportedPolicyError(
        f"{where}: {message}; modelsec's safe reader rebuilds the MlpPolicy of PPO, A2C, DQN and SAC. If you trust "
        "the file's author, --trust-model loads it with Stable-Baselines3's own loader (which unpickles it and can "
        "run code)"
    )


# -- the archive ---------------------------------------------------------------------------------------------------


def is_sb3_archive(path: str | Path) -> bool:
    """Whether ``path`` is a zip archive holding SB3's ``data`` and ``policy.pth`` (by content, not by name)."""
    try:
        with Path(path).open("rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False
    return {"data", "policy.pth"} <= names


def looks_like_sb3(path: str | Path) -> bool:
    """Whether the zip archive at ``path`` starts with a member SB3 writes first (``data``), whatever state the
    rest of it is in: a truncated SB3 file is then called that, not by the name of a zip found inside it."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if len(head) < 30 or not head.startswith(b"PK\x03\x04"):
        return False
    length = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + length] in (b"data", b"policy.pth")


class _Archive:
    """An SB3 archive whose member names and sizes passed the checks (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.where = repr(str(path))
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
            raise _format_error(
                self.where, f"not a readable zip archive (truncated or corrupt?): {printable(e)}"
            ) from None
        try:
            self._check(self.zip.infolist())
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *args: object) -> None:
        self.zip.close()

    def _check(self, infos: list[zipfile.ZipInfo]) -> None:
        if len(infos) > MAX_MEMBERS:
            raise UnsafeModelError(f"{self.where}: refused: {len(infos)} archive members (SB3 writes at most 8)")
        names = [info.filename for info in infos]
        for name in names:
            if name not in _TEXT_MEMBERS and not _TORCH_MEMBER.fullmatch(name):
                raise UnsafeModelError(
                    f"{self.where}: refused: the archive member {printable(repr(name))} is not one Stable-Baselines3 "
                    "writes (plain names only: data, *.pth, _stable_baselines3_version, system_info.txt; no folders, "
                    "no '..', no other pickles); the file was not loaded"
                )
        if len(set(names)) != len(names):
            raise UnsafeModelError(
                f"{self.where}: refused: the archive holds two members of one name, and which one a reader sees "
                "depends on the reader; the file was not loaded"
            )
        self.infos = {info.filename: info for info in infos}
        for required in ("data", "policy.pth"):
            if required not in self.infos:
                raise _format_error(self.where, f"not a Stable-Baselines3 archive: it has no {required!r} member")

    def read(self, name: str, limit: int) -> bytes:
        info = self.infos[name]
        if info.file_size > limit:
            raise UnsafeModelError(
                f"{self.where}: refused: the member {name!r} claims {info.file_size} bytes uncompressed, more than the "
                f"{limit} modelsec reads"
            )
        try:
            with self.zip.open(info) as f:
                data = f.read(limit + 1)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError, RuntimeError, NotImplementedError) as e:
            raise _format_error(self.where, f"the member {name!r} cannot be read (corrupt?): {printable(e)}") from None
        if len(data) > limit:  # zipfile stops at the declared size; this is a second fence
            raise UnsafeModelError(f"{self.where}: refused: the member {name!r} holds more than {limit} bytes")
        return data

    def data(self) -> dict[str, Any]:
        raw = self.read("data", MAX_DATA_BYTES)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise _format_error(self.where, f"its 'data' member is not valid JSON: {printable(e)}") from None
        if not isinstance(data, dict):
            raise _format_error(self.where, "its 'data' member is not a JSON object")
        return data

    def state_dict(self) -> dict[str, torch.Tensor]:
        raw = self.read("policy.pth", MAX_WEIGHTS_BYTES)
        try:  # the torch.save file is itself a zip: bound what its members claim before torch reads them
            with zipfile.ZipFile(io.BytesIO(raw)) as inner:
                claimed = sum(info.file_size for info in inner.infolist())
        except (zipfile.BadZipFile, ValueError, EOFError) as e:
            raise _format_error(self.where, f"its policy.pth is not a torch.save file: {printable(e)}") from None
        if claimed > MAX_WEIGHTS_BYTES:
            raise UnsafeModelError(f"{self.where}: refused: policy.pth claims {claimed} bytes uncompressed")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeModelError(
                f"{self.where}: refused: policy.pth holds objects that the safe loader (weights_only=True) refuses "
                f"({_first_line(e)}); a policy's state dict holds tensors only, so the file was not loaded (with or "
                "without --trust-model)"
            ) from None
        except Exception as e:  # torch's reader raises RuntimeError, EOFError, ValueError... on corrupt data
            raise _format_error(self.where, f"its policy.pth cannot be read (corrupt?): {_first_line(e)}") from None
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise _format_error(self.where, "its policy.pth does not hold a state dict (name -> tensor)")
        return state

    def version(self) -> str | None:
        if "_stable_baselines3_version" not in self.infos:
            return None
        return printable(self.read("_stable_baselines3_version", 1024).decode("utf-8", "replace"), 40)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Please use|Check the documentation|$)", text, re.S)
    detail = found.group(1) if found else (text.splitlines()[0] if text else "")
    return printable(f"{type(error).__name__}: {detail}" if detail else type(error).__name__, 200)


# -- what the data records -----------------------------------------------------------------------------------------


def pickled_reference(serialized: str, *, limit: int = 1 << 16) -> str | None:
    """The module-qualified name of the first class or function a base64 pickle references (``None``: none, or
    not a pickle), read from its opcodes with :mod:`pickletools`: nothing is unpickled.

    >>> pickled_reference(base64.b64encode(pickle.dumps(ActionSpec)).decode())
    'modelsec.rl.policy.ActionSpec'
    """
    try:
        raw = base64.b64decode(serialized[: 4 * limit // 3 + 4], validate=False)
    except (binascii.Error, ValueError):
        return None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(raw)):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                return ".".join(arg.split(" ", 1))
            if op.name == "STACK_GLOBAL":
                return f"{strings[-2]}.{strings[-1]}" if len(strings) >= 2 else None
            if "UNICODE" in op.name and isinstance(arg, str):
                strings.append(arg)
    except (ValueError, EOFError, UnicodeDecodeError):
        return None
    return None


def _policy_class(data: dict[str, Any], where: str) -> str:
    entry = data.get("policy_class")
    if isinstance(entry, dict) and isinstance(entry.get(":serialized:"), str):
        name = pickled_reference(entry[":serialized:"])
        if name:
            return name
    raise _format_error(where, "its data record no readable policy class (is it a Stable-Baselines3 archive?)")


def _algorithm(policy_class: str, data: dict[str, Any], where: str) -> str:
    """The algorithm that wrote the file: from the policy class, and for an actor-critic policy from the
    hyper-parameters it records (PPO's ``clip_range``)."""
    if policy_class in (_ACTOR_CRITIC, "stable_baselines3.common.policies.ActorCriticCnnPolicy",
                        "stable_baselines3.common.policies.MultiInputActorCriticPolicy"):  # fmt: skip
        return "PPO" if "clip_range" in data else "A2C"
    if policy_class.startswith("stable_baselines3.dqn."):
        return "DQN"
    if policy_class.startswith("stable_baselines3.sac."):
        return "SAC"
    if policy_class.startswith("stable_baselines3.td3."):
        return "TD3"
    raise _format_error(
        where,
        f"its policy class is {printable(policy_class, 120)}, which modelsec does not read (it reads the policies of "
        "Stable-Baselines3's PPO, A2C, DQN and SAC)",
    )


def _readable(entry: Any) -> dict[str, Any]:
    """The readable keys of a data entry (a serialized one's copies of its attributes, or a plain JSON object)."""
    if not isinstance(entry, dict):
        return {}
    return {k: v for k, v in entry.items() if not k.startswith(":")}


def _numbers(text: Any, size: int, what: str, where: str) -> tuple[float, ...]:
    """A numpy array as ``str(array)`` writes it (``"[-4.8 -inf 0.41887903 inf]"``), flattened; float32 values
    print as the shortest text that reads back to the same float32."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return (float(text),) * size
    if not isinstance(text, str) or "..." in text:
        raise _format_error(where, f"its {what} is not readable ({printable(repr(text), 80)})")
    try:
        values = [float(np.float32(v)) for v in text.replace("[", " ").replace("]", " ").split()]
    except ValueError:
        raise _format_error(where, f"its {what} is not readable ({printable(repr(text), 80)})") from None
    if len(values) == 1 and size > 1:
        values *= size
    if len(values) != size:
        raise _format_error(where, f"its {what} has {len(values)} values for {size} dimensions")
    return tuple(values)


def _space_type(entry: Any) -> str:
    kind = entry.get(":type:") if isinstance(entry, dict) else None
    found = re.fullmatch(r"<class '([\w.]+)'>", kind) if isinstance(kind, str) else None
    return found.group(1) if found else "unknown"


def _shape(space: dict[str, Any], what: str, where: str) -> tuple[int, ...]:
    shape = space.get("_shape", space.get("shape"))
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise _format_error(where, f"its {what} space has no readable shape")
    return tuple(shape)


def _observation_shape(data: dict[str, Any], policy_kwargs: dict[str, Any], where: str) -> tuple[int, ...]:
    entry = data.get("observation_space")
    kind = _space_type(entry)
    if not kind.endswith("spaces.box.Box"):
        raise _unsupported(where, f"its observation space is a {kind.rsplit('.', 1)[-1]}, not a Box")
    space = _readable(entry)
    shape = _shape(space, "observation", where)
    if space.get("dtype") == "uint8" and len(shape) == 3 and policy_kwargs.get("normalize_images", True) is not False:
        raise _unsupported(where, "its observations are images (which SB3 rescales by 1/255 before the network)")
    return shape


def _action_spec(data: dict[str, Any], where: str) -> ActionSpec:
    entry = data.get("action_space")
    kind = _space_type(entry)
    space = _readable(entry)
    if kind.endswith("spaces.discrete.Discrete"):
        try:
            n, start = int(space.get("n", "")), int(space.get("start", 0))
        except (TypeError, ValueError):
            raise _format_error(where, "its Discrete action space has no readable size") from None
        if start != 0:
            raise _unsupported(where, f"its Discrete action space starts at {start}, not 0")
        return ActionSpec("discrete", n=n)
    if kind.endswith("spaces.box.Box"):
        shape = _shape(space, "action", where)
        if len(shape) != 1:
            raise _unsupported(where, f"its Box action space has shape {shape}, not one dimension")
        low = _numbers(space.get("low", space.get("low_repr")), shape[0], "action space's low bound", where)
        high = _numbers(space.get("high", space.get("high_repr")), shape[0], "action space's high bound", where)
        if not all(math.isfinite(v) for v in (*low, *high)) or any(a >= b for a, b in zip(low, high, strict=True)):
            raise _unsupported(where, "its Box action space's bounds are not finite and increasing")
        return ActionSpec("continuous", low=low, high=high)
    raise _unsupported(where, f"its action space is a {kind.rsplit('.', 1)[-1]}, not a Discrete or a Box")


def _policy_kwargs(data: dict[str, Any], where: str) -> dict[str, Any]:
    entry = data.get("policy_kwargs", {})
    kwargs = _readable(entry)
    if entry is not None and not isinstance(entry, dict):
        raise _format_error(where, "its policy_kwargs are not a JSON object")
    if isinstance(entry, dict) and ":serialized:" in entry and not kwargs:
        raise _unsupported(where, "its policy_kwargs are recorded only pickled, so its architecture is unknown")
    unknown = sorted(set(kwargs) - _HARMLESS_KWARGS - _CHECKED_KWARGS)
    if unknown:
        raise _unsupported(
            where, f"its policy_kwargs set {', '.join(map(repr, unknown[:5]))}, which modelsec does not know"
        )
    if kwargs.get("use_sde") or data.get("use_sde"):
        raise _unsupported(where, "it uses generalized state-dependent exploration (use_sde)")
    if kwargs.get("squash_output"):
        raise _unsupported(where, "its policy squashes its output (squash_output)")
    extractor = kwargs.get("features_extractor_class")
    if extractor is not None and not str(extractor).endswith("FlattenExtractor'>"):
        raise _unsupported(where, f"its features extractor is {printable(str(extractor), 100)}, not a flatten")
    if kwargs.get("features_extractor_kwargs"):
        raise _unsupported(where, "it sets features_extractor_kwargs")
    return kwargs


def _activation(kwargs: dict[str, Any], policy_class: str, where: str) -> str:
    if "activation_fn" not in kwargs:
        return _DEFAULT_ACTIVATION[policy_class]
    text = kwargs["activation_fn"]
    found = re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>", text) if isinstance(text, str) else None
    if found is None or found.group(1) not in _ACTIVATION_CLASSES:
        raise _unsupported(
            where,
            f"its activation is {printable(str(text), 100)}; the safe reader knows "
            f"{', '.join(sorted(_ACTIVATION_CLASSES))} (torch.nn)",
        )
    return _ACTIVATION_CLASSES[found.group(1)]


# -- the network, from the weights' shapes -------------------------------------------------------------------------


def _layers(state: dict[str, torch.Tensor], prefix: str, where: str) -> list[int]:
    """The widths ``[in, out_1, ..., out_k]`` of the linear layers ``{prefix}.0``, ``{prefix}.2``, ... of an SB3
    ``create_mlp`` stack (each followed by its activation, which has no weights); ``[]`` when there are none."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.(weight|bias)")
    indices = sorted({int(m.group(1)) for k in state if (m := pattern.fullmatch(k))})
    if not indices:
        return []
    if indices != list(range(0, 2 * len(indices), 2)):
        raise _unsupported(
            where, f"the layers of {prefix} ({indices}) are not linear layers each followed by an activation"
        )
    widths: list[int] = []
    for i in indices:
        weight, bias = state.get(f"{prefix}.{i}.weight"), state.get(f"{prefix}.{i}.bias")
        if weight is None or bias is None or weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise _unsupported(where, f"{prefix}.{i} is not a linear layer with a bias")
        if widths and widths[-1] != weight.shape[1]:
            raise _format_error(where, f"{prefix}.{i} takes {weight.shape[1]} inputs after a layer of {widths[-1]}")
        if not widths:
            widths.append(int(weight.shape[1]))
        widths.append(int(weight.shape[0]))
    return widths


def _net_arch(kwargs: dict[str, Any], keys: tuple[str, str]) -> tuple[list[int], list[int]] | None:
    """The recorded ``net_arch`` as (actor, critic) hidden sizes (``None``: not recorded or not plain)."""
    arch = kwargs.get("net_arch")
    if isinstance(arch, list) and len(arch) == 1 and isinstance(arch[0], dict):
        arch = arch[0]  # SB3 < 1.8's [dict(pi=..., vf=...)], which SB3 2.x still takes
    if isinstance(arch, list) and all(isinstance(v, int) for v in arch):
        return list(arch), list(arch)
    if isinstance(arch, dict):
        return list(arch.get(keys[0], [])), list(arch.get(keys[1], []))
    return None


def _check_arch(kwargs: dict[str, Any], keys: tuple[str, str], found: tuple[list[int], list[int]], where: str) -> None:
    recorded = _net_arch(kwargs, keys)
    if recorded is not None and recorded != found:
        raise _format_error(
            where, f"its policy_kwargs record net_arch {kwargs.get('net_arch')!r}, but its weights have layers {found}"
        )


def _actor_critic(
    state: dict[str, torch.Tensor], dim: int, action: ActionSpec, act: str, kw: dict[str, Any], where: str
) -> nn.Module:
    shared = _layers(state, "mlp_extractor.shared_net", where)
    width = shared[-1] if shared else dim
    pi = _layers(state, "mlp_extractor.policy_net", where) or [width]
    vf = _layers(state, "mlp_extractor.value_net", where) or [width]
    if (shared and shared[0] != dim) or pi[0] != width or vf[0] != width:
        raise _format_error(where, f"its network does not take observations of {dim} values")
    if not shared:
        _check_arch(kw, ("pi", "vf"), (pi[1:], vf[1:]), where)
    return ActorCriticMLP(dim, action, tuple(pi[1:]), act, critic_hidden=tuple(vf[1:]), shared=tuple(shared[1:]))


def _q_network(
    state: dict[str, torch.Tensor], dim: int, action: ActionSpec, act: str, kw: dict[str, Any], where: str
) -> nn.Module:
    if action.kind != "discrete":
        raise _format_error(where, "a DQN policy with a continuous action space")
    widths = _layers(state, "q_net.q_net", where)
    if len(widths) < 2 or widths[0] != dim or widths[-1] != action.n:
        raise _format_error(where, f"its Q-network does not map {dim} observation values to {action.n} Q-values")
    if not isinstance(kw.get("net_arch"), dict):
        _check_arch(kw, ("pi", "qf"), (widths[1:-1], widths[1:-1]), where)
    return QNetworkMLP(dim, action, tuple(widths[1:-1]), act)


def _squashed(
    state: dict[str, torch.Tensor], dim: int, action: ActionSpec, act: str, kw: dict[str, Any], where: str
) -> nn.Module:
    if action.kind != "continuous":
        raise _format_error(where, "a SAC policy with a discrete action space")
    actor = _layers(state, "actor.latent_pi", where) or [dim]
    critics = len({m.group(1) for k in state if (m := re.match(r"critic\.qf(\d+)\.", k))})
    q = _layers(state, "critic.qf0", where)
    if actor[0] != dim or len(q) < 2 or q[0] != dim + action.dim or q[-1] != 1:
        raise _format_error(where, f"its actor and critics do not take observations of {dim} values")
    _check_arch(kw, ("pi", "qf"), (actor[1:], q[1:-1]), where)
    return SquashedGaussianActorCritic(
        dim, action, tuple(actor[1:]), act, critic_hidden=tuple(q[1:-1]), critics=critics
    )


_BUILDERS = {_ACTOR_CRITIC: _actor_critic, _DQN: _q_network, _SAC: _squashed}
_TARGETS = ("q_net_target.", "critic_target.", "actor_target.")  # target networks: used in training only


def _training(data: dict[str, Any]) -> dict[str, Any]:
    """The plain hyper-parameters and counters the data record (JSON scalars, private and run-specific ones left
    out)."""
    skip = {"start_time", "tensorboard_log", "verbose"}
    return {
        k: v
        for k, v in data.items()
        if not k.startswith("_") and k not in skip and (v is None or isinstance(v, (bool, int, float, str)))
    }


def read_sb3(path: str | Path) -> Policy:
    """The policy of a Stable-Baselines3 ``.zip`` file, rebuilt without unpickling anything (see the module
    docstring). Raises :class:`~modelsec.rl.files.UnsupportedPolicyError` for what it cannot rebuild,
    :class:`~modelsec.core.errors.UnsafeModelError` for a hostile archive and
    :class:`~modelsec.rl.files.PolicyFormatError` for a corrupt one."""
    with _Archive(Path(path)) as archive:
        return _rebuild(archive)


def _rebuild(archive: _Archive) -> Policy:
    where = archive.where
    data = archive.data()
    policy_class = _policy_class(data, where)
    algorithm = _algorithm(policy_class, data, where)
    if policy_class not in _BUILDERS:
        name = policy_class.rsplit(".", 1)[-1]
        raise _unsupported(where, f"its policy is a {algorithm} {name} (not the MlpPolicy)")
    kwargs = _policy_kwargs(data, where)
    shape = _observation_shape(data, kwargs, where)
    action = _action_spec(data, where)
    activation = _activation(kwargs, policy_class, where)
    state = {k: v for k, v in archive.state_dict().items() if not k.startswith(_TARGETS)}
    dim = math.prod(shape)
    module = _BUILDERS[policy_class](state, dim, action, activation, kwargs, where)
    load_weights(module, state, where, unsupported=True)
    card = {
        "format": "sb3-zip",
        "algorithm": algorithm,
        "policy_class": policy_class,
        "sb3_version": archive.version(),
        "architecture": dict(module.config),  # type: ignore[arg-type]
        "training": _training(data),
    }
    return Policy(module, shape, action, has_critic=True, card=card)


# -- trusted: SB3's own loader -------------------------------------------------------------------------------------


class SB3PolicyModule(nn.Module):
    """An SB3 policy object (loaded by SB3 itself) as a module returning a :class:`PolicyOutput`: an actor-critic
    policy's distribution (logits, or Gaussian mean and log-std) and value; a DQN policy's Q-values (value: their
    maximum); a SAC or TD3 policy's deterministic action rescaled to the bounds (value: the critics' minimum at it,
    no log-std)."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, policy: nn.Module, algorithm: str, action: ActionSpec) -> None:
        super().__init__()
        self.policy = policy
        self.algorithm = algorithm
        self.action = action
        if action.kind == "continuous":
            self.register_buffer("low", torch.tensor(action.low, dtype=torch.float32), persistent=False)
            self.register_buffer("high", torch.tensor(action.high, dtype=torch.float32), persistent=False)

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        policy: Any = self.policy
        if self.algorithm in ("PPO", "A2C"):
            dist = policy.get_distribution(obs).distribution
            value = policy.predict_values(obs).squeeze(1)
            if self.action.kind == "discrete":
                return PolicyOutput(logits=dist.logits, value=value)
            return PolicyOutput(mean=dist.mean, log_std=dist.stddev.log(), value=value)
        if self.algorithm == "DQN":
            q = policy.q_net(obs)
            return PolicyOutput(logits=q, value=q.max(dim=1).values)
        scaled = policy.actor(obs, deterministic=True) if self.algorithm == "SAC" else policy.actor(obs)
        mean = self.low + 0.5 * (scaled + 1.0) * (self.high - self.low)
        q_values = policy.critic(obs, scaled)
        return PolicyOutput(mean=mean, value=torch.cat(q_values, dim=1).min(dim=1).values)


def load_trusted_sb3(path: str | Path) -> Policy:
    """The policy of an SB3 ``.zip`` file loaded by SB3's own ``<ALGORITHM>.load`` (only with ``trust_model``: it
    unpickles the file's data, which can run code), wrapped as a :class:`SB3PolicyModule`."""
    p = Path(path)
    with _Archive(p) as archive:  # the same archive checks as the safe reader
        data = archive.data()
        version = archive.version()
    algorithm = _algorithm(_policy_class(data, archive.where), data, archive.where)
    try:
        import stable_baselines3
    except ImportError:
        raise _format_error(archive.where, "loading it needs Stable-Baselines3: pip install 'modelsec[rl]'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = getattr(stable_baselines3, algorithm).load(str(p), device="cpu")
    except Exception as e:  # whatever SB3 raises on a file it cannot read
        raise _format_error(archive.where, f"Stable-Baselines3 cannot load it: {_first_line(e)}") from None
    if not type(model.observation_space).__name__ == "Box":
        raise _format_error(archive.where, "its observation space is not a Box")
    action = ActionSpec.from_space(model.action_space)
    module = SB3PolicyModule(model.policy, algorithm, action)
    card = {
        "format": "sb3-zip",
        "algorithm": algorithm,
        "policy_class": f"{type(model.policy).__module__}.{type(model.policy).__qualname__}",
        "sb3_version": version,
        "loaded_by": "stable-baselines3 (trusted)",
        "training": _training(data),
    }
    return Policy(module, tuple(model.observation_space.shape), action, has_critic=True, card=card)
