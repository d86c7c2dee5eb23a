"""Policy files (modelsec.rl.files, modelsec.rl.sb3): safetensors round trips, .pt2 programs, and Stable-Baselines3
archives read without unpickling, checked against SB3's own predictions on models it trains here for a few steps;
hostile and corrupt files refused without running anything."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modelsec.core.errors import ModelsecError, UnsafeModelError
from modelsec.core.seeding import numpy_stream, seeded
from modelsec.rl import sb3 as sb3_reader
from modelsec.rl.architectures import ActorCriticMLP, build_policy_module
from modelsec.rl.files import (
    POLICY_METADATA_KEY,
    PolicyFormatError,
    UnsupportedPolicyError,
    export_policy,
    load_policy,
    save_policy,
)
from modelsec.rl.policy import ActionSpec, Policy
from tests.evil_archives import CreatesFile, rewrite
from tests.evil_sb3 import (
    duplicate_member,
    edit_data,
    replaced_weights,
    rewrite_sb3,
    serialized_entry,
    weights_pickle,
)

DISCRETE = ActionSpec("discrete", n=3)
CONTINUOUS = ActionSpec("continuous", low=(-2.0, -1.0), high=(2.0, 0.5))
BUILT_IN = {
    "actor-critic-discrete": ({"arch": "actor-critic-mlp", "hidden": [8, 8], "activation": "tanh"}, DISCRETE),
    "actor-critic-continuous": (
        {"arch": "actor-critic-mlp", "hidden": [8], "critic_hidden": [6, 4], "shared": [5], "activation": "relu"},
        CONTINUOUS,
    ),
    "q-network": ({"arch": "q-mlp", "hidden": [8], "activation": "relu"}, DISCRETE),
    "sac": ({"arch": "sac-mlp", "hidden": [8], "critic_hidden": [6], "critics": 2, "activation": "relu"}, CONTINUOUS),
}
OUTPUTS = ("logits", "mean", "log_std", "value")


def built_in_policy(name: str, seed: int = 0) -> Policy:
    """A built-in network with random (seeded) weights, larger than its initial ones so outputs differ widely."""
    config, action = BUILT_IN[name]
    module = build_policy_module({**config, "observation_dim": 4}, action)
    with seeded(seed), torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    card = {"env_id": "Toy-v0", "algorithm": "analytic", "training": {"steps": 0}}
    return Policy(module, (4,), action, has_critic=True, card=card)


def observations(low: np.ndarray, high: np.ndarray, n: int = 200, seed: int = 0) -> np.ndarray:
    """``n`` observations uniform in ``[low, high]`` (infinite bounds replaced by +-3)."""
    low, high = np.nan_to_num(low, neginf=-3.0), np.nan_to_num(high, posinf=3.0)
    return numpy_stream(seed, 0).uniform(low, high, size=(n, len(low))).astype(np.float32)


def assert_same_outputs(a: Policy, b: Policy, obs: torch.Tensor, *, exact: bool = True) -> None:
    out_a, out_b = a.output(obs), b.output(obs)
    for name in OUTPUTS:
        x, y = getattr(out_a, name), getattr(out_b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            x = x.expand(obs.shape[0], *x.shape[-1:]) if name == "log_std" else x
            y = y.expand(obs.shape[0], *y.shape[-1:]) if name == "log_std" else y
            assert torch.equal(x, y) if exact else torch.allclose(x, y, atol=1e-6, rtol=0), name


# -- safetensors and .pt2 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_safetensors_round_trip(name: str, tmp_path: Path) -> None:
    policy = built_in_policy(name)
    save_policy(policy, tmp_path / "p.safetensors")
    loaded = load_policy(tmp_path / "p.safetensors")
    obs = torch.as_tensor(observations(np.full(4, -3.0), np.full(4, 3.0), n=64))
    assert_same_outputs(policy, loaded, obs)
    assert loaded.observation_shape == (4,) and loaded.action == policy.action and loaded.has_critic
    assert loaded.card["env_id"] == "Toy-v0" and loaded.card["training"] == {"steps": 0}
    assert loaded.card["format"] == "safetensors"
    assert loaded.card["architecture"] == policy.module.config  # type: ignore[union-attr]
    # a second policy of other weights gives other outputs: the comparison above can fail
    other = built_in_policy(name, seed=1)
    with pytest.raises(AssertionError):
        assert_same_outputs(other, loaded, obs)


def test_save_policy_refuses_what_it_cannot_rebuild(tmp_path: Path) -> None:
    class Custom(nn.Module):
        def forward(self, obs: torch.Tensor) -> Any:
            return None

    with pytest.raises(ModelsecError, match="built-in policy networks"):
        save_policy(Policy(Custom(), (4,), DISCRETE), tmp_path / "p.safetensors")
    policy = built_in_policy("q-network")
    policy.card["when"] = object()
    with pytest.raises(ModelsecError, match="plain JSON"):
        save_policy(policy, tmp_path / "p.safetensors")


def test_safetensors_that_are_not_policies(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "clf.safetensors"), metadata={"modelsec": "{}"})
    with pytest.raises(PolicyFormatError, match="no policy card"):
        load_policy(tmp_path / "clf.safetensors")
    policy = built_in_policy("actor-critic-discrete")
    save_policy(policy, tmp_path / "p.safetensors")
    data = (tmp_path / "p.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(PolicyFormatError, match="truncated or corrupt"):
        load_policy(tmp_path / "cut.safetensors")
    state = {k: v.clone() for k, v in policy.module.state_dict().items()}
    state["action_net.weight"][0, 0] = math.nan
    header = json.dumps({"version": 1, "architecture": policy.module.config, "observation_shape": [4],
                         "action": DISCRETE.to_dict(), "has_critic": True, "card": {}})  # fmt: skip
    save_file(state, str(tmp_path / "nan.safetensors"), metadata={POLICY_METADATA_KEY: header})
    with pytest.raises(PolicyFormatError, match="NaN or infinite"):
        load_policy(tmp_path / "nan.safetensors")
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={POLICY_METADATA_KEY: header.replace("3", "1")})
    with pytest.raises(PolicyFormatError, match="malformed policy card"):  # a discrete space of 1 action
        load_policy(tmp_path / "bad.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"\x00junk" * 10)
    with pytest.raises(PolicyFormatError, match="not a policy file"):
        load_policy(tmp_path / "junk.bin")
    with pytest.raises(PolicyFormatError, match="does not exist"):
        load_policy(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name", ["actor-critic-continuous", "q-network"])
def test_pt2_policy_needs_trust(name: str, tmp_path: Path) -> None:
    policy = built_in_policy(name)
    export_policy(policy, tmp_path / "p.pt2")
    with pytest.raises(UnsafeModelError, match="only with --trust-model"):
        load_policy(tmp_path / "p.pt2")
    loaded = load_policy(tmp_path / "p.pt2", trust_model=True)
    obs = torch.as_tensor(observations(np.full(4, -3.0), np.full(4, 3.0), n=32))
    assert_same_outputs(policy, loaded, obs, exact=False)
    assert loaded.card["format"] == "torch-export" and loaded.card["env_id"] == "Toy-v0"
    one = obs[0].numpy()
    assert np.array_equal(np.asarray(loaded.act(one)), np.asarray(policy.act(one)))  # a batch of one works


def test_pt2_without_card_or_with_hostile_parts(tmp_path: Path) -> None:
    program = torch.export.export(nn.Linear(4, 2), (torch.zeros(2, 4),))
    torch.export.save(program, str(tmp_path / "plain.pt2"))
    with pytest.raises(PolicyFormatError, match="without a policy card"):
        load_policy(tmp_path / "plain.pt2", trust_model=True)
    export_policy(built_in_policy("q-network"), tmp_path / "good.pt2")
    canary = tmp_path / "canary"
    evil = rewrite(
        tmp_path / "good.pt2",
        tmp_path / "evil.pt2",
        {"data/sample_inputs/model.pt": lambda _: pickle.dumps(CreatesFile(canary))},
    )
    with pytest.raises(UnsafeModelError, match="refused"):
        load_policy(evil, trust_model=True)
    assert not canary.exists()


# -- Stable-Baselines3 ----------------------------------------------------------------------------------------------

SB3_MODELS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    # name: (algorithm, environment, settings, training steps); a few steps each, so the weights leave their
    # initialisation but the test stays fast
    "ppo": ("PPO", "CartPole-v1", {"n_steps": 32, "batch_size": 32, "n_epochs": 1}, 64),
    "a2c": (
        "A2C",
        "CartPole-v1",
        {"n_steps": 8, "policy_kwargs": {"net_arch": [{"pi": [32], "vf": [16]}], "activation_fn": nn.ReLU}},
        32,
    ),
    "dqn": (
        "DQN",
        "CartPole-v1",
        {
            "learning_starts": 16,
            "buffer_size": 64,
            "batch_size": 8,
            "train_freq": 4,
            "policy_kwargs": {"net_arch": [32, 32]},
        },
        48,
    ),
    "sac": (
        "SAC",
        "Pendulum-v1",
        {
            "learning_starts": 16,
            "buffer_size": 64,
            "batch_size": 8,
            "policy_kwargs": {"net_arch": {"pi": [32], "qf": [48, 24]}},
        },
        24,
    ),
    "ppo-continuous": (
        "PPO",
        "Pendulum-v1",
        {
            "n_steps": 32,
            "batch_size": 32,
            "n_epochs": 1,
            "policy_kwargs": {"net_arch": {"pi": [16, 16], "vf": [24]}, "log_std_init": -0.5},
        },
        32,
    ),
}


@pytest.fixture(scope="module")
def sb3_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each model of :data:`SB3_MODELS`, trained by SB3 and saved with ``.save()``: (file, model)."""
    sb3 = pytest.importorskip("stable_baselines3")
    folder = tmp_path_factory.mktemp("sb3")
    models = {}
    for name, (algorithm, env, settings, steps) in SB3_MODELS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SB3's note on the list form of net_arch
            model = getattr(sb3, algorithm)("MlpPolicy", env, seed=0, device="cpu", **settings)
        model.learn(steps)
        model.save(folder / f"{name}.zip")
        models[name] = (folder / f"{name}.zip", model)
    return models


def _sb3_observations(model: Any, n: int = 200) -> np.ndarray:
    space = model.observation_space
    return observations(np.asarray(space.low), np.asarray(space.high), n=n)


@pytest.mark.parametrize("name", sorted(SB3_MODELS))
def test_sb3_policy_acts_as_sb3_predicts(name: str, sb3_models: dict[str, tuple[Path, Any]]) -> None:
    path, model = sb3_models[name]
    policy = load_policy(path)
    assert policy.card["algorithm"] == SB3_MODELS[name][0] and policy.card["format"] == "sb3-zip"
    obs = _sb3_observations(model)
    ours = np.stack([np.asarray(policy.act(o)) for o in obs])
    theirs, _ = model.predict(obs, deterministic=True)
    if policy.action.kind == "discrete":
        assert np.array_equal(ours, theirs)
        if name != "dqn":  # (a Q-network this young prefers one action everywhere; its Q-values are compared below)
            assert len(set(theirs.tolist())) > 1  # both actions occur: the comparison means something
    else:
        assert np.allclose(ours, theirs, atol=1e-5, rtol=0)
        assert theirs.std() > 1e-3


@pytest.mark.parametrize("name", sorted(SB3_MODELS))
def test_sb3_value_heads(name: str, sb3_models: dict[str, tuple[Path, Any]]) -> None:
    path, model = sb3_models[name]
    policy = load_policy(path)
    obs = torch.as_tensor(_sb3_observations(model, n=50))
    out = policy.output(obs)
    assert policy.has_critic and out.value is not None and out.value.shape == (50,)
    with torch.no_grad():
        if name == "dqn":
            q = model.policy.q_net(obs)
            assert torch.equal(out.logits, q) and torch.equal(out.value, q.max(dim=1).values)
            return
        if name == "sac":
            action = model.policy.actor(obs, deterministic=True)
            expected = torch.cat(model.policy.critic(obs, action), dim=1).min(dim=1).values
        else:
            expected = model.policy.predict_values(obs).squeeze(1)
    assert torch.allclose(out.value, expected, atol=1e-6, rtol=0)


def test_sb3_policy_saved_again_as_safetensors(sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    path, model = sb3_models["sac"]
    policy = load_policy(path)
    save_policy(policy, tmp_path / "sac.safetensors")
    again = load_policy(tmp_path / "sac.safetensors")
    assert_same_outputs(policy, again, torch.as_tensor(_sb3_observations(model, n=20)))
    assert again.card["algorithm"] == "SAC" and again.card["format"] == "safetensors"
    assert again.card["architecture"]["critic_hidden"] == [48, 24]


def test_sb3_activation_outside_the_safe_reader_needs_trust(tmp_path: Path) -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    settings = {"n_steps": 16, "batch_size": 16, "n_epochs": 1, "policy_kwargs": {"activation_fn": nn.Softplus}}
    model = sb3.PPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu", **settings)
    model.learn(16)
    model.save(tmp_path / "softplus.zip")
    with pytest.raises(UnsupportedPolicyError, match=r"Softplus.*--trust-model"):
        load_policy(tmp_path / "softplus.zip")
    policy = load_policy(tmp_path / "softplus.zip", trust_model=True)
    assert policy.card["loaded_by"] == "stable-baselines3 (trusted)"
    obs = _sb3_observations(model, n=50)
    theirs, _ = model.predict(obs, deterministic=True)
    assert np.array_equal(np.stack([policy.act(o) for o in obs]), theirs)
    values = policy.output(torch.as_tensor(obs)).value
    with torch.no_grad():
        assert torch.allclose(values, model.policy.predict_values(torch.as_tensor(obs)).squeeze(1), atol=1e-6)


def test_sb3_shared_layers(sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    """SB3 before 1.8 wrote layers shared by actor and critic (``mlp_extractor.shared_net``): their sizes come
    from the weights."""
    path, _ = sb3_models["ppo"]
    with seeded(3):
        module = ActorCriticMLP(4, ActionSpec("discrete", n=2), (6,), "tanh", critic_hidden=(5,), shared=(7,))
    replaced_weights(path, tmp_path / "shared.zip", module.state_dict())
    policy = load_policy(tmp_path / "shared.zip")
    assert policy.module.config["shared"] == [7] and policy.module.config["critic_hidden"] == [5]  # type: ignore[index]
    assert_same_outputs(Policy(module, (4,), module.action, has_critic=True), policy, torch.randn(30, 4))


def test_sb3_features_it_does_not_rebuild(sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    path, _ = sb3_models["ppo"]

    def edited(name: str, change: Any) -> Path:
        return rewrite_sb3(path, tmp_path / f"{name}.zip", {"data": edit_data(change)})

    cases = {
        "dict-observations": (lambda d: d["observation_space"].update({":type:": "<class 'gymnasium.spaces.dict.Dict'>"}), "not a Box"),  # noqa: E501
        "multi-discrete": (lambda d: d["action_space"].update({":type:": "<class 'gymnasium.spaces.multi_discrete.MultiDiscrete'>"}), "MultiDiscrete"),  # noqa: E501
        "sde": (lambda d: d.update(use_sde=True), "use_sde"),
        "cnn-extractor": (lambda d: d.update(policy_kwargs={"features_extractor_class": "<class 'x.NatureCNN'>"}), "features extractor"),  # noqa: E501
        "unknown-kwarg": (lambda d: d.update(policy_kwargs={"dropout": 0.5}), "'dropout'"),
        "pickled-kwargs": (lambda d: d.update(policy_kwargs={":type:": "<class 'dict'>", ":serialized:": "gAR9lC4="}), "only pickled"),  # noqa: E501
        "ppo-cnn": (lambda d: d["policy_class"].update({":serialized:": canary_free_class("ActorCriticCnnPolicy")}), "ActorCriticCnnPolicy"),  # noqa: E501
    }  # fmt: skip
    for name, (change, message) in cases.items():
        with pytest.raises(UnsupportedPolicyError, match=message):
            load_policy(edited(name, change))
    state = dict(load_policy(path).module.state_dict())
    state["features_extractor.cnn.0.weight"] = torch.zeros(2, 2)
    with pytest.raises(UnsupportedPolicyError, match="unexpected"):
        load_policy(replaced_weights(path, tmp_path / "cnn.zip", state))
    arch = edited("arch", lambda d: d.update(policy_kwargs={"net_arch": [32, 32]}))
    with pytest.raises(PolicyFormatError, match="net_arch"):  # the weights have 64 units a layer
        load_policy(arch)


def canary_free_class(name: str) -> str:
    """A ``":serialized:"`` policy class as SB3 writes it: a pickle referencing ``stable_baselines3.common.policies.
    <name>`` (by opcodes only; the class need not exist)."""
    module = "stable_baselines3.common.policies"
    raw = b"\x80\x04\x95" + b"\x00" * 8 + bytes([0x8C, len(module)]) + module.encode()
    raw += bytes([0x94, 0x8C, len(name)]) + name.encode() + b"\x94\x93\x94."
    return base64.b64encode(raw).decode()


# -- hostile and corrupt archives -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["lr_schedule", "observation_space", "_last_obs"])
def test_cloudpickled_data_entries_are_never_unpickled(
    key: str, sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    path, model = sb3_models["ppo"]
    canary = tmp_path / "canary"
    evil = serialized_entry(path, tmp_path / "evil.zip", key, canary)
    policy = load_policy(evil)  # the readable keys suffice; the pickle is not touched
    obs = _sb3_observations(model, n=20)
    assert np.array_equal(np.stack([policy.act(o) for o in obs]), model.predict(obs, deterministic=True)[0])
    assert not canary.exists()
    if key == "lr_schedule":  # the archive is really hostile: SB3's own loader creates the canary
        sb3 = pytest.importorskip("stable_baselines3")
        with contextlib.suppress(Exception):  # whatever SB3 makes of the file object it unpickled
            sb3.PPO.load(evil, device="cpu")
        assert canary.exists()


def test_hostile_policy_class_refused(sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    path, _ = sb3_models["ppo"]
    canary = tmp_path / "canary"
    evil = serialized_entry(path, tmp_path / "evil.zip", "policy_class", canary)
    for trust in (False, True):
        with pytest.raises(PolicyFormatError, match=r"policy class is (io|builtins)\.open, which modelsec does not"):
            load_policy(evil, trust_model=trust)
    assert not canary.exists()


def test_pickle_in_weights_refused(sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    path, _ = sb3_models["dqn"]
    canary = tmp_path / "canary"
    evil = weights_pickle(path, tmp_path / "evil.zip", canary)
    for trust in (False, True):
        with pytest.raises(UnsafeModelError, match="weights_only=True"):
            load_policy(evil, trust_model=trust)
    assert not canary.exists()


@pytest.mark.parametrize("member", ["../escape.pth", "/absolute.pth", "folder/policy.pth", "evil.pkl", "data.pkl"])
def test_archive_members_sb3_never_writes(member: str, sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    path, _ = sb3_models["ppo"]
    canary = tmp_path / "canary"
    payload = pickle.dumps(CreatesFile(canary))
    evil = rewrite_sb3(path, tmp_path / "evil.zip", add={member: payload})
    with pytest.raises(UnsafeModelError, match="not one Stable-Baselines3 writes"):
        load_policy(evil, trust_model=True)
    assert not canary.exists()


def test_duplicate_members_and_size_limits(
    sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = sb3_models["ppo"]
    with pytest.raises(UnsafeModelError, match="two members"):
        load_policy(duplicate_member(path, tmp_path / "twice.zip"))
    # a member that inflates far beyond its compressed size (a decompression bomb, here 8 MiB of JSON padding
    # in ~10 KiB) is refused from its declared size, before it is inflated
    padded = rewrite_sb3(path, tmp_path / "padded.zip", {"data": lambda raw: raw[:-1] + b" " * (8 << 20) + b"}"})
    assert padded.stat().st_size < 300_000
    monkeypatch.setattr(sb3_reader, "MAX_DATA_BYTES", 4 << 20)
    with pytest.raises(UnsafeModelError, match="claims"):
        load_policy(padded)
    monkeypatch.setattr(sb3_reader, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(UnsafeModelError, match=r"policy\.pth"):
        load_policy(path)


def test_corrupt_archives(sb3_models: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    path, _ = sb3_models["ppo"]
    raw = path.read_bytes()
    (tmp_path / "cut.zip").write_bytes(raw[: len(raw) // 2])
    rewrite_sb3(path, tmp_path / "json.zip", {"data": lambda r: r[: len(r) // 2]})
    rewrite_sb3(path, tmp_path / "pth.zip", {"policy.pth": lambda r: r[: len(r) // 2]})
    rewrite_sb3(path, tmp_path / "empty.zip", {"data": lambda r: b"{}"})
    messages = {"cut.zip": "truncated or corrupt", "json.zip": "not valid JSON", "pth.zip": r"policy\.pth"}
    for name, message in {**messages, "empty.zip": "no readable policy class"}.items():
        with pytest.raises(PolicyFormatError, match=message):
            load_policy(tmp_path / name)
    with zipfile.ZipFile(path) as z:
        assert {"data", "policy.pth"} <= set(z.namelist())


def test_a_stable_baselines3_file_given_as_a_classifier_points_to_audit_policy(tmp_path: Path) -> None:
    from modelsec.core.errors import ModelLoadError
    from modelsec.models.formats import detect_format

    path = tmp_path / "agent.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", "{}")
        z.writestr("policy.pth", b"")
    with pytest.raises(ModelLoadError, match=r"Stable-Baselines3 policy .* modelsec audit-policy"):
        detect_format(path)
