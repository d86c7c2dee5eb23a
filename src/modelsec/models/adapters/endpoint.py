"""A model behind a prediction API, or behind any Python callable: a black-box :class:`~modelsec.models.Classifier`.

The attacker of a served model sees what the service returns and nothing else, so the classifier declares that
capability (:class:`~modelsec.models.Capability`): ``SCORES`` when the service returns probabilities or logits,
``LABELS`` when it returns only the predicted label. The presets then run black-box attacks only (Square,
HopSkipJump) and the membership attacks that work from scores (or labels).

The HTTP protocol (``modelsec audit --endpoint URL``): each request is a ``POST`` of the JSON object
``{"inputs": [record, ...]}``, each record a nested list in modelsec's layout of the data (``(channels, height,
width)`` for images, a flat list for tabular data) with values in the data's bounds; the answer is a JSON object with
one of

- ``"probabilities"``: ``[[p_0, ..., p_k-1], ...]``, one row per record, each summing to 1;
- ``"logits"``: ``[[z_0, ..., z_k-1], ...]``, used as they are;
- ``"labels"``: ``[y, ...]``, one integer class per record (a labels-only API).

The first answer (a probe of one record at the middle of the bounds, sent when the model is loaded) decides the
capability; every answer is checked (one row per record, one column per class, finite numbers, probabilities in
[0, 1] summing to 1, labels in range), and one that is not what the protocol says stops the audit with
:class:`EndpointError` (exit 2) quoting the problem.

Everything modelsec computes reads logits: the model returns the log of the probabilities (clipped at
:data:`~modelsec.models.output.PROBABILITY_FLOOR`), the logits as given, or for labels log-probabilities of 1 on
the label and the floor elsewhere, as :mod:`modelsec.models.output` does for hardened outputs.

Reproducibility: the audit is as deterministic as the service. Requests carry the records in the order and the
batches the audit asks for (``batch_size`` records a request, the classifier's batch size too), retries wait a fixed
exponential backoff (no jitter), and nothing random is drawn here, so a deterministic service audited twice with
the same seed gives the same numbers, and the numbers of the same model run locally with scores only.

Costs and limits: ``query_budget`` caps the records sent (the probe included); the request that would pass it is
not sent and the audit stops with :class:`QueryBudgetError` (exit 2), naming the budget and what was used.
``timeout``, ``retries`` (with exponential ``backoff``: 1x, 2x, 4x, ... seconds; retried are timeouts, refused or
dropped connections, HTTP 429 and 5xx answers) and ``rate_limit`` (requests per second) govern the traffic; custom
``headers`` (an API key) are sent with every request and never recorded. The queries, requests and retries are
recorded in ``result.json`` (``model.endpoint``), with the URL stripped of credentials and query string.

Other protocols: pass a callable to :func:`modelsec.audit` (``model=fn``): ``fn`` maps a float32 numpy batch
``(n, *input_shape)`` to its probabilities ``(n, classes)``, or to a dict like the JSON answers above. Wrap it in
:class:`ScoreFunction` to declare that it returns ``"logits"`` or ``"labels"``, or to set a batch size or a query
budget:

>>> import numpy as np
>>> def labels_of(batch):  # a labels-only model of 8 features and 2 classes
...     return (batch.sum(axis=1) > 4).astype(int)
>>> model = ScoreFunction(labels_of, output="labels", batch_size=64, query_budget=10_000)
>>> model.output
'labels'
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import ConfigError, ModelsecError, printable
from modelsec.models.base import Capability, Classifier
from modelsec.models.output import LOG_FLOOR, PROBABILITY_FLOOR

OUTPUTS = ("probabilities", "logits", "labels")
"""What a prediction API (or a scoring callable) returns: the keys of an answer of the HTTP protocol."""

DEFAULT_BATCH_SIZE = 128
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5
PROBABILITY_TOLERANCE = 1e-3
"""How far from 1 a row of probabilities may sum (services round their answers), and below 0 or above 1 a value."""


class EndpointError(ModelsecError):
    """A prediction API that cannot be reached, refuses the requests, or answers outside the protocol."""


class QueryBudgetError(ModelsecError):
    """The query budget is spent: the audit would need more records sent than ``--query-budget`` allows."""


class HttpEndpoint:
    """A client of the HTTP protocol (see the module docstring): called with a float32 batch, it returns the parsed
    JSON answer. Counts its ``requests`` and ``retries``; standard library only (``urllib.request``).

    Args:
        url: an ``http://`` or ``https://`` URL.
        headers: extra request headers (``{"Authorization": "Bearer ..."}``); never recorded.
        timeout: seconds to wait for one answer.
        retries: further tries of a request that timed out, could not connect, or got HTTP 429 or 5xx.
        backoff: seconds before the first retry, doubled before each next one (no jitter: reproducible).
        rate_limit: at most this many requests per second (``None``: no limit).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        rate_limit: float | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--endpoint must be an http:// or https:// URL, got {printable(url)!r}")
        if not (timeout > 0) or math.isinf(timeout):
            raise ConfigError(f"--endpoint-timeout must be a number of seconds > 0, got {timeout}")
        if retries < 0:
            raise ConfigError(f"--endpoint-retries must be >= 0, got {retries}")
        if not (backoff >= 0) or math.isinf(backoff):
            raise ConfigError(f"--endpoint-backoff must be a number of seconds >= 0, got {backoff}")
        if rate_limit is not None and (not (rate_limit > 0) or math.isinf(rate_limit)):
            raise ConfigError(f"--rate-limit must be a number of requests per second > 0, got {rate_limit}")
        self.url = url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.rate_limit = None if rate_limit is None else float(rate_limit)
        self.requests = 0  # requests sent, retries included
        self.retried = 0  # of which retries
        self._last_start: float | None = None

    @property
    def public_url(self) -> str:
        """The URL without user name, password, query string or fragment (what ``result.json`` records)."""
        return redact_url(self.url)

    def settings(self) -> dict[str, Any]:
        """The client's settings as recorded (no headers: they may hold credentials)."""
        return {
            "url": self.public_url,
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "rate_limit": self.rate_limit,
            "headers": sorted(k for k in self.headers if k not in ("Content-Type", "Accept")),
        }

    def __call__(self, batch: np.ndarray) -> Any:
        body = json.dumps({"inputs": batch.tolist()}, allow_nan=False).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._wait_for_rate_limit()
            self.requests += 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                if e.code == 429 or e.code >= 500:
                    last = f"HTTP {e.code} {printable(e.reason)}"
                    continue
                hint = " (check --endpoint-header)" if e.code in (401, 403) else ""
                raise EndpointError(
                    f"the endpoint {self.public_url} refused the request: HTTP {e.code} {printable(e.reason)}{hint}"
                ) from None
            except TimeoutError:
                last = f"no answer within {self.timeout:g} s"
                continue
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError):
                    last = f"no answer within {self.timeout:g} s"
                else:
                    last = f"connection failed ({printable(reason)})"
                continue
            try:
                answer = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                answer = None
            if not isinstance(answer, dict):
                raise EndpointError(
                    f"the endpoint {self.public_url} did not answer a JSON object: {printable(raw[:200])!r}; see "
                    "the protocol in the README (Your own model: a prediction API)"
                )
            return answer
        raise EndpointError(
            f"the endpoint {self.public_url} failed {self.retries + 1} tries of one request (last: {last}); check "
            "that it is up, or raise --endpoint-timeout / --endpoint-retries"
        )

    def _wait_for_rate_limit(self) -> None:
        if self.rate_limit is None:
            return
        now = time.monotonic()
        if self._last_start is not None:
            wait = self._last_start + 1.0 / self.rate_limit - now
            if wait > 0:
                time.sleep(wait)
                now = time.monotonic()
        self._last_start = now


def redact_url(url: str) -> str:
    """``url`` without credentials, query string and fragment.

    >>> redact_url("https://user:secret@api.example.com:8443/v1/predict?key=abc#x")
    'https://api.example.com:8443/v1/predict'
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ScoreFunction:
    """A model given as a callable: ``fn`` maps a float32 numpy batch ``(n, *input_shape)`` (modelsec's layout, values
    in the data's bounds) to what the model returns for it.

    Args:
        fn: the callable. It returns an array, read as ``output`` says, or a dict like an answer of the HTTP
            protocol (``{"probabilities": ...}``, ``{"logits": ...}`` or ``{"labels": ...}``), whose key decides.
        output: what an array returned by ``fn`` holds: ``"probabilities"`` (the default), ``"logits"``, or
            ``"labels"`` (a labels-only model: the audit then runs decision-based attacks only).
        batch_size: records a call (a request).
        query_budget: the most records sent to ``fn`` in all (``None``: no limit).
        name: how reports name the model.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        output: str = "probabilities",
        batch_size: int = DEFAULT_BATCH_SIZE,
        query_budget: int | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"a ScoreFunction needs a callable, got {type(fn).__name__}")
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if batch_size < 1:
            raise ConfigError(f"--endpoint-batch-size must be >= 1, got {batch_size}")
        if query_budget is not None and query_budget < 1:
            raise ConfigError(f"--query-budget must be >= 1, got {query_budget}")
        self.fn = fn
        self.output = output
        self.batch_size = int(batch_size)
        self.query_budget = None if query_budget is None else int(query_budget)
        if name is None:
            name = fn.public_url if isinstance(fn, HttpEndpoint) else getattr(fn, "__qualname__", type(fn).__name__)
        self.name = str(name)


def endpoint(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    rate_limit: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    query_budget: int | None = None,
) -> ScoreFunction:
    """The model served at ``url`` (the HTTP protocol of the module docstring), for :func:`modelsec.audit`;
    ``modelsec audit --endpoint URL`` builds it from its options. Arguments: see :class:`HttpEndpoint` and
    :class:`ScoreFunction`."""
    client = HttpEndpoint(
        url, headers=headers, timeout=timeout, retries=retries, backoff=backoff, rate_limit=rate_limit
    )
    return ScoreFunction(client, batch_size=batch_size, query_budget=query_budget)


class RemoteModel(nn.Module):
    """An ``nn.Module`` without parameters whose forward pass asks a :class:`ScoreFunction` and returns logits
    (log-probabilities; see the module docstring). No gradients flow through it. Counts the records it sent
    (``queries``) and enforces the query budget."""

    def __init__(self, scores: ScoreFunction, num_classes: int) -> None:
        super().__init__()
        self.scores = scores
        self.num_classes = int(num_classes)
        self.output: str | None = None  # what the answers hold: set by the first one
        self.queries = 0

    @property
    def capability(self) -> Capability:
        """What the answers give an attacker: scores, or labels only."""
        if self.output is None:
            raise RuntimeError("the model has not answered yet")
        return Capability.LABELS if self.output == "labels" else Capability.SCORES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().to("cpu", torch.float32).numpy()
        size = self.scores.batch_size
        parts = [self._ask(batch[i : i + size]) for i in range(0, batch.shape[0], size)]
        out = torch.cat(parts) if parts else torch.empty(0, self.num_classes)
        return out.to(x.device)

    def _ask(self, batch: np.ndarray) -> torch.Tensor:
        n = int(batch.shape[0])
        budget = self.scores.query_budget
        if budget is not None and self.queries + n > budget:
            raise QueryBudgetError(
                f"the query budget of {budget} records is spent: {self.queries} records were sent to "
                f"{self.scores.name}{self._request_count()}, and the audit needs {n} more now. Raise it with "
                "--query-budget (Python: query_budget=...), or ask for less: fewer --samples or --mia-samples, "
                "or a cheaper --preset / --attacks"
            )
        self.queries += n
        answer = self.scores.fn(batch)
        output, values = self._read(answer)
        if self.output is None:
            self.output = output
        elif output != self.output:
            raise EndpointError(
                f"{self.scores.name} answered {output} after answering {self.output}; a model must always "
                "return the same kind of output"
            )
        return self._logits(output, values, n)

    def _request_count(self) -> str:
        client = self.scores.fn
        return f" in {client.requests} requests" if isinstance(client, HttpEndpoint) else ""

    def _read(self, answer: Any) -> tuple[str, Any]:
        if isinstance(answer, Mapping):
            keys = [k for k in OUTPUTS if k in answer]
            if len(keys) != 1:
                found = ", ".join(printable(k, 40) for k in list(answer)[:5]) or "none"
                raise EndpointError(
                    f"{self.scores.name} answered an object with keys {found}; expected exactly one of "
                    f"{', '.join(OUTPUTS)} (see the protocol in the README: Your own model: a prediction API)"
                )
            return keys[0], answer[keys[0]]
        if isinstance(answer, (np.ndarray, list, tuple, torch.Tensor)):
            return self.scores.output, answer
        raise EndpointError(
            f"{self.scores.name} returned {printable(type(answer).__name__)}; expected an array of "
            f"{self.scores.output} or an object with one of {', '.join(OUTPUTS)}"
        )

    def _logits(self, output: str, values: Any, n: int) -> torch.Tensor:
        name, k = self.scores.name, self.num_classes
        try:
            if isinstance(values, torch.Tensor):
                values = values.detach().cpu().numpy()
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise EndpointError(f"{name} answered {output} that are not numbers: {printable(values, 200)}") from None
        if output == "labels":
            if array.shape != (n,):
                raise EndpointError(f"{name} answered labels of shape {array.shape} for {n} records; expected ({n},)")
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)) or np.any((array < 0) | (array >= k)):
                raise EndpointError(f"{name} answered labels that are not classes 0 to {k - 1}: {_sample(array)}")
            labels = torch.from_numpy(array.astype(np.int64))
            out = torch.full((n, k), LOG_FLOOR, dtype=torch.float32)
            out[torch.arange(n), labels] = 0.0
            return out
        if array.shape != (n, k):
            hint = ""
            if array.shape == (n,):
                hint = (
                    '. One number per record: if these are class labels, declare them (HTTP: answer "labels"; '
                    'Python: ScoreFunction(fn, output="labels")); if it is the probability of class 1 of a binary '
                    "model, return both columns [1 - p, p]"
                )
            raise EndpointError(
                f"{name} answered {output} of shape {array.shape} for {n} records; expected ({n}, {k}): one row per "
                f"record, one column per class of the data{hint}"
            )
        if not np.all(np.isfinite(array)):
            raise EndpointError(f"{name} answered {output} with NaN or infinite values: {_sample(array)}")
        if output == "logits":
            return torch.from_numpy(array.astype(np.float32))
        tol = PROBABILITY_TOLERANCE
        if np.any(array < -tol) or np.any(array > 1 + tol) or np.any(np.abs(array.sum(axis=1) - 1) > tol):
            raise EndpointError(
                f"{name} answered probabilities that are not in [0, 1] or do not sum to 1 per record: "
                f'{_sample(array)}; if these are logits, answer them as "logits"'
            )
        return torch.from_numpy(np.log(np.clip(array, PROBABILITY_FLOOR, 1.0)).astype(np.float32))

    def record(self) -> dict[str, Any]:
        """What ``result.json`` records under ``model.endpoint``: the service (its URL without secrets, or the
        callable's name), its output and capability, the traffic settings and what was used."""
        client = self.scores.fn
        http = isinstance(client, HttpEndpoint)
        out: dict[str, Any] = {
            "kind": "http" if http else "callable",
            "name": self.scores.name,
            "output": self.output,
            "capability": None if self.output is None else self.capability.name.lower(),
            "batch_size": self.scores.batch_size,
            "query_budget": self.scores.query_budget,
            "queries": self.queries,
        }
        if isinstance(client, HttpEndpoint):
            out.update(client.settings())
            out["requests"] = client.requests
            out["retried"] = client.retried
        return out


def _sample(array: np.ndarray) -> str:
    return printable(np.array2string(array.ravel()[:6], precision=4), 120)


# -- the adapter contract (see modelsec.models.adapters) -----------------------------------------------------------


def wraps(obj: Any) -> bool:
    """A :class:`ScoreFunction`, or a plain callable that is no ``nn.Module``, class or Classifier (a function, a
    method, an object with ``__call__``). Asked last: framework models that are callable belong to their own
    adapters."""
    if isinstance(obj, ScoreFunction):
        return True
    return callable(obj) and not isinstance(obj, (nn.Module, type, Classifier))


def wrap(obj: Any, request: Any) -> Any:
    """The :class:`Classifier` of a scoring callable: one probe record (the middle of the bounds) is sent to learn
    what the model returns (its capability) and to check the answer's shape against the data's classes."""
    from modelsec.models.loading import LoadedModel
    from modelsec.results.audit import ModelInfo

    scores = obj if isinstance(obj, ScoreFunction) else ScoreFunction(obj)
    if request.input_shape is None or request.num_classes is None:
        raise ConfigError("a model behind an endpoint or a callable needs data to know its inputs: pass --data")
    shape = tuple(int(s) for s in request.input_shape)
    low, high = request.bounds if request.bounds is not None else (0.0, 1.0)
    module = RemoteModel(scores, request.num_classes)
    with torch.no_grad():
        module(torch.full((1, *shape), (low + high) / 2, dtype=torch.float32))
    classifier = Classifier(
        module,
        input_shape=shape,
        num_classes=request.num_classes,
        bounds=(float(low), float(high)),
        capability=module.capability,
        device="cpu",
        batch_size=scores.batch_size,
        name=scores.name,
    )
    http = isinstance(scores.fn, HttpEndpoint)
    info = ModelInfo(
        path=None,
        sha256=None,
        arch=None,
        format="endpoint" if http else "callable",
        num_classes=request.num_classes,
        input_shape=list(shape),
        parameters=None,
        endpoint=module.record(),
    )
    return LoadedModel(classifier=classifier, info=info)
