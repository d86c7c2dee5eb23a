"""Reinforcement-learning policies: audit a trained policy in a Gymnasium environment against attacks on its
observations, and harden it.

- :mod:`~modelsec.rl.policy`: the one policy interface (:class:`~modelsec.rl.policy.Policy`);
- :mod:`~modelsec.rl.architectures`: the built-in policy networks;
- :mod:`~modelsec.rl.threat`: the observation threat model (eps in units of each dimension's standard deviation);
- :mod:`~modelsec.rl.environments` and :mod:`~modelsec.rl.rollout`: seeded episodes, clean and attacked;
- :mod:`~modelsec.rl.attacks`: the policy attacks, all through one contract that verifies each perturbation;
- :mod:`~modelsec.rl.files` and :mod:`~modelsec.rl.sb3`: policy files (safetensors, ``.pt2``, Stable-Baselines3
  ``.zip`` read without unpickling);
- :mod:`~modelsec.rl.ppo` and :mod:`~modelsec.rl.hardening`: PPO, and its hardened variants (SA-PPO, PPO on
  PGD-perturbed observations).

Gymnasium and Stable-Baselines3 come with the ``rl`` extra (``pip install 'modelsec[rl]'``).
"""
