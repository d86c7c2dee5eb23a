"""What an evasion attack spends against the least it had to spend: forward and backward passes and their floor.

Issue 16's compute limit: an attack should spend nothing on a sample once it is broken. The classifier counts what
is spent (``Classifier.queries``: inputs sent through the model, the forward passes; ``Classifier.gradient_queries``:
inputs whose input gradient was computed, the backward passes, each EoT sample counted). The attacks record, as they
go, the *floor*: the passes that a perfect per-sample early stop would spend too, one evaluation for every step each
sample was still unbroken, and nothing after. The floor of each family (the docstring of each attack's module
refers here):

- every attack (the contract, :class:`~modelsec.attacks.base.EvasionAttack`): one forward pass per sample for its
  clean prediction and one for the re-classification of its output (one more for the unprojected candidate of a
  minimum-norm attack);
- gradient steps (FGSM, BIM, PGD; APGD, APGD-T): per run, one forward pass (times ``eot_samples``) for every
  iterate evaluated while its sample had not yet been seen misclassified, and one backward pass (times
  ``eot_samples``) for every such iterate that is still classified correctly (its gradient is needed for the next
  step), plus the last forward pass that scores the final iterate. Forward and backward are fused in one evaluation,
  so an attack that stops a sample on the forward pass that sees it broken still spends that pass's backward: one
  backward pass per broken sample over the floor (a separate checking pass would cost a forward pass per sample and
  step instead, more on any model but the weakest). APGD-T adds one forward pass per sample for its targets.
- DeepFool: the clean logits (one forward pass per sample), and per step, for each sample still correctly
  classified, one forward pass and ``candidates - 1`` backward passes, plus the forward pass that sees it broken.
- Carlini & Wagner L2: per constant, one forward and one backward pass per Adam step for each sample that has no
  adversarial point inside the ball yet, plus the forward pass that scores the last iterate (when the caller asks
  for the full minimum-norm search, ``AttackBatch.stop_at_eps`` False, every sample stays unbroken to the end).
- Square (score-based): one forward pass per query for each sample not yet misclassified.
- HopSkipJump (decision-based): every label query made for a sample whose best point lies outside the ball (the
  same caveat about ``stop_at_eps``).

The floor is a count of what a perfect early stop of *this* algorithm would spend (the same steps, the same random
draws), not a lower bound for any attack. :class:`~modelsec.results.audit.AttackCost` puts spent and floor side by
side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from modelsec.core.resume import replaying


@dataclass
class Floor:
    """The passes a perfect per-sample early stop would spend, accumulated while an attack runs."""

    forward: int = 0
    backward: int = 0


_CURRENT: ContextVar[Floor | None] = ContextVar("modelsec_attack_floor", default=None)


def need(*, forward: int = 0, backward: int = 0) -> None:
    """Add passes to the floor of the attack under way (a no-op outside one): the attacks call it for every
    evaluation of a sample that was still unbroken. Work redone on the way back into a checkpoint's loops is not
    counted again (the checkpoint holds the floor so far)."""
    floor = _CURRENT.get()
    if floor is not None and not replaying():
        floor.forward += int(forward)
        floor.backward += int(backward)


@contextlib.contextmanager
def recording(floor: Floor) -> Iterator[Floor]:
    """Accumulate :func:`need` calls into ``floor`` for the block (nested attacks keep their own)."""
    token = _CURRENT.set(floor)
    try:
        yield floor
    finally:
        _CURRENT.reset(token)
