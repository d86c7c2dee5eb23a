"""Output hardening: a trained model that reveals less of its prediction than its logits.

A prediction API can return the whole probability vector, only its k largest entries, probabilities rounded to a
few decimals, or only the predicted label. Membership inference feeds on the fine detail of the scores (how
confident the model is on the true class), so each coarser output leaves an attacker less to work with (Shokri,
Stronati, Song & Shmatikov 2017, "Membership Inference Attacks against Machine Learning Models", evaluate
top-k and rounding as mitigations; Choquette-Choo, Tramer, Carlini & Papernot 2021, "Label-Only Membership Inference
Attacks", show what labels alone still leak).

Each hardening here is a small ``nn.Module`` around the trained module whose output is the *log-probabilities of
the hardened distribution*: every part of modelsec reads logits, and a softmax of these gives exactly the
probabilities the hardened API would return, so an audit measures what that API reveals and no more.

=============  ==================================================================  ===============================
kind           what the API returns                                                :class:`Capability`
=============  ==================================================================  ===============================
``top-k``      the k largest probabilities, exactly; every other class gets an     SCORES
               equal share of the remaining mass (what the k revealed ones imply)
``rounding``   every probability rounded to ``decimals`` decimals (0 shown as a   SCORES
               floor of 1e-12 so the log stays finite)
``label-only`` the predicted label only (probability 1 on it, the floor          LABELS
               elsewhere)
=============  ==================================================================  ===============================

The capability is what an attacker of the API gets, and so what an audit may use: a hardened API exposes scores
(or labels), never gradients. The wrappers' own gradients would be meaningless anyway: rounding and label-only
are piecewise constant (zero gradient almost everywhere), and top-k's gradient flows only through the revealed
classes. Gradient attacks on a hardened model would measure gradient masking, not robustness.

The hardening never changes the predicted label: top-k keeps the largest probability exactly; rounding breaks
ties that rounding creates in favour of the model's own prediction (a service returns its label with the scores).

Saved models record the hardening in their safetensors header as ``"output": {"kind": ..., <params>}`` (for
example ``{"kind": "top-k", "k": 3}``, ``{"kind": "rounding", "decimals": 2}``, ``{"kind": "label-only"}``);
the weights are the trained module's own, so the file also loads as the plain model with ``output`` removed.
:func:`modelsec.models.load_model` wraps the module with :func:`harden_output` and sets the classifier's capability.

>>> import torch
>>> logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
>>> top2 = TopK(torch.nn.Identity(), k=2)
>>> top2.spec()
{'kind': 'top-k', 'k': 2}
>>> [round(p, 4) for p in logits.softmax(1)[0].tolist()]
[0.831, 0.1125, 0.0414, 0.0152]
>>> [round(p, 4) for p in top2(logits).softmax(1)[0].tolist()]
[0.831, 0.1125, 0.0283, 0.0283]
>>> [round(p, 4) for p in Rounding(torch.nn.Identity(), decimals=1)(logits).exp()[0].tolist()]
[0.8, 0.1, 0.0, 0.0]
>>> LabelOnly(torch.nn.Identity())(logits)  # log(1) on the label, log(1e-12) elsewhere
tensor([[  0.0000, -27.6310, -27.6310, -27.6310]])
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional

from modelsec.core.errors import ConfigError
from modelsec.core.registry import Registry
from modelsec.models.base import Capability

PROBABILITY_FLOOR = 1e-12
"""The probability shown for a class the hardened output reports as 0 (its log stays finite)."""

LOG_FLOOR = math.log(PROBABILITY_FLOOR)

MAX_DECIMALS = 6
"""Rounding to more decimals than this is below float32's resolution of a probability: it would hide nothing."""


class OutputHardening(nn.Module, abc.ABC):
    """A trained classifier module whose output is hardened: ``forward`` returns the log-probabilities of what the
    hardened API reveals, shape ``(n, num_classes)``.

    The wrapped module is ``self.module``; save *its* weights (the wrapper has none of its own) and record
    :meth:`spec` beside them.
    """

    kind: ClassVar[str]
    capability: ClassVar[Capability]

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.harden(self.module(x))

    @abc.abstractmethod
    def harden(self, logits: torch.Tensor) -> torch.Tensor:
        """The hardened log-probabilities of logits ``(n, k)``."""

    def params(self) -> dict[str, Any]:
        """The hardening's parameters (recorded in the file beside ``kind``)."""
        return {}

    def spec(self) -> dict[str, Any]:
        """What a saved model's header records as ``"output"``."""
        return {"kind": self.kind, **self.params()}

    def check_classes(self, num_classes: int) -> None:
        """Raise :class:`ConfigError` if the hardening hides nothing with ``num_classes`` classes."""
        return

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.spec().items())


OUTPUT_HARDENINGS: Registry[type[OutputHardening]] = Registry("output hardening")


@OUTPUT_HARDENINGS.register("top-k")
class TopK(OutputHardening):
    """Reveal the ``k`` largest probabilities exactly; the other classes share the remaining mass equally.

    Sharing the remainder (rather than setting the hidden classes to 0) keeps a proper distribution and reveals
    nothing beyond the k probabilities: the remainder is ``1 - sum(top k)``, known to anyone who sees them. The
    order of the top k, and so the predicted label, is kept; the hidden classes tie below them.
    """

    kind = "top-k"
    capability = Capability.SCORES

    def __init__(self, module: nn.Module, *, k: int) -> None:
        super().__init__(module)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"top-k: k must be an integer >= 1, got {k!r}")
        self.k = k

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def check_classes(self, num_classes: int) -> None:
        if self.k >= num_classes:
            raise ConfigError(
                f"top-k: k={self.k} reveals every probability of a {num_classes}-class model; pick k < {num_classes}"
            )

    def harden(self, logits: torch.Tensor) -> torch.Tensor:
        logp = functional.log_softmax(logits, dim=1)
        n_classes = logp.shape[1]
        if self.k >= n_classes:
            return logp
        top = logp.topk(self.k, dim=1).indices
        shown = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, top, True)
        # log of the hidden classes' mean probability: logsumexp over them, less log(count); exact even when tiny
        hidden_mass = torch.logsumexp(logp.masked_fill(shown, float("-inf")), dim=1, keepdim=True)
        share = hidden_mass - math.log(n_classes - self.k)
        return torch.where(shown, logp, share.expand_as(logp))


@OUTPUT_HARDENINGS.register("rounding")
class Rounding(OutputHardening):
    """Reveal every probability rounded to ``decimals`` decimals (a probability that rounds to 0 is shown as
    :data:`PROBABILITY_FLOOR`). Ties that rounding creates at the top go to the model's own prediction, so the
    predicted label is unchanged. The rounded values need not sum to 1; a softmax of the output renormalises them,
    which changes no ratio between them."""

    kind = "rounding"
    capability = Capability.SCORES

    def __init__(self, module: nn.Module, *, decimals: int) -> None:
        super().__init__(module)
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 1 <= decimals <= MAX_DECIMALS:
            raise ConfigError(f"rounding: decimals must be an integer from 1 to {MAX_DECIMALS}, got {decimals!r}")
        self.decimals = decimals

    def params(self) -> dict[str, Any]:
        return {"decimals": self.decimals}

    def harden(self, logits: torch.Tensor) -> torch.Tensor:
        p = functional.softmax(logits.double(), dim=1)  # float64: rounding at the 6th decimal stays exact
        rounded = torch.round(p, decimals=self.decimals)
        out = rounded.clamp_min(PROBABILITY_FLOOR).log().to(logits.dtype)
        # the prediction's rounded probability is a maximum (rounding is monotone); one step up makes it the only one
        label = logits.argmax(dim=1, keepdim=True)
        top = out.gather(1, label)
        return out.scatter(1, label, torch.nextafter(top, torch.full_like(top, math.inf)))


@OUTPUT_HARDENINGS.register("label-only")
class LabelOnly(OutputHardening):
    """Reveal only the predicted label: log-probability 0 on it, :data:`LOG_FLOOR` on every other class."""

    kind = "label-only"
    capability = Capability.LABELS

    def harden(self, logits: torch.Tensor) -> torch.Tensor:
        label = logits.argmax(dim=1, keepdim=True)
        out = torch.full_like(logits, LOG_FLOOR)
        return out.scatter(1, label, torch.zeros_like(label, dtype=logits.dtype))


def harden_output(module: nn.Module, spec: Mapping[str, Any]) -> OutputHardening:
    """Wrap ``module`` with the hardening that ``spec`` (``{"kind": ..., <params>}``, as recorded in a model file)
    describes. Raises :class:`ConfigError` for an unknown kind or bad parameters.

    >>> harden_output(torch.nn.Identity(), {"kind": "rounding", "decimals": 3})
    Rounding(
      kind='rounding', decimals=3
      (module): Identity()
    )
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
        raise ConfigError(f"an output hardening is a mapping with a 'kind' string, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "kind"}
    cls = OUTPUT_HARDENINGS.get(spec["kind"])
    try:
        return cls(module, **params)
    except TypeError:
        raise ConfigError(f"{spec['kind']}: unexpected parameters {sorted(params)} in {dict(spec)!r}") from None
