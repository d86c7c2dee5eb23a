"""The prediction-API adapter (modelsec.models.adapters.endpoint): a digits MLP served by a real local HTTP server
that each test starts, audited through ``--endpoint`` / :func:`modelsec.audit`, against the same model run locally
with scores only."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelsec.audits import AuditConfig
from modelsec.cli.main import main
from modelsec.core.errors import ConfigError, ModelsecError
from modelsec.data import load_splits
from modelsec.defenses.training import TrainingConfig, train_and_save
from modelsec.models import load_model
from modelsec.models.adapters import LoadRequest, wrap_object
from modelsec.models.adapters.endpoint import (
    EndpointError,
    HttpEndpoint,
    QueryBudgetError,
    ScoreFunction,
    endpoint,
    redact_url,
)
from modelsec.models.base import Capability, Classifier
from modelsec.outputs.audit import audit_and_write
from modelsec.results.audit import AuditResult
from modelsec.results.schema import validate_result_dict

# Square at a large eps breaks the digits MLP within a few hundred queries: the audits stay fast over HTTP
CONFIG = AuditConfig(eps=(0.3,), samples=24, mia_samples=60, attacks=("square",), seed=5)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    train_and_save(data="digits", arch="mlp", out=path, config=TrainingConfig(epochs=8, batch_size=64, seed=0))
    return path


@dataclass
class Served:
    """What the test server does: ``mode`` the protocol key it answers (or "garbage"), ``fail_rate`` the share of
    requests answered with HTTP 500 (seeded), ``delay`` seconds before answering, ``token`` a bearer token it
    requires."""

    module: torch.nn.Module
    mode: str = "logits"
    fail_rate: float = 0.0
    delay: float = 0.0
    token: str | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    lock: threading.Lock = field(default_factory=threading.Lock)
    posts: int = 0
    failures: int = 0
    records: int = 0

    def answer(self, body: dict[str, Any]) -> dict[str, Any] | bytes:
        x = torch.tensor(body["inputs"], dtype=torch.float32)
        with torch.no_grad():
            logits = self.module(x)
        if self.mode == "logits":
            return {"logits": logits.tolist()}
        if self.mode == "probabilities":
            return {"probabilities": logits.softmax(dim=1).tolist()}
        if self.mode == "labels":
            return {"labels": logits.argmax(dim=1).tolist()}
        if self.mode == "nan":
            return {"probabilities": [[float("nan")] * logits.shape[1]] * len(x)}
        if self.mode == "list":
            return json.dumps(logits.softmax(dim=1).tolist()).encode()
        if self.mode == "short":
            return {"logits": logits[:-1].tolist()}
        return b"<html>not json</html>"


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the test server is local, whatever proxy the machine sets

    def start(served: Served) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with served.lock:
                    served.posts += 1
                    fail = served.rng.random() < served.fail_rate
                    served.failures += fail
                    if not fail:
                        served.records += len(body["inputs"])
                if served.token is not None and self.headers.get("Authorization") != f"Bearer {served.token}":
                    self.send_error(401)
                    return
                if fail:
                    self.send_error(500)
                    return
                time.sleep(served.delay)
                with served.lock:  # one forward pass at a time, as one served model
                    answer = served.answer(body)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/predict"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def modelsec_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``modelsec ARGS``, as the console script runs it: the exit code and what it printed."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def local_scores(path: Path) -> Classifier:
    """The model file run locally, with scores only (what an attacker of its API gets)."""
    clf = load_model(path).classifier
    clf.capability = Capability.SCORES
    return clf


def numbers(r: AuditResult) -> dict[str, Any]:
    assert r.robustness is not None and r.privacy is not None
    return {
        "clean": r.robustness.clean_accuracy,
        "robust": r.robustness.robust_accuracy,
        "per_attack": [(e.attack, e.eps, e.robust_accuracy) for e in r.robustness.results],
        "skipped": [s.attack for s in r.robustness.skipped],
        "flags": [f.check for f in r.robustness.flags],
        "membership": [(m.attack, m.auc, m.auc_ci, m.tpr_at_fpr) for m in r.privacy.attacks],
    }


def test_served_model_audits_to_the_local_numbers(
    digits_model: Path, serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The done-when of issue 13: ``modelsec audit --endpoint`` of the served model gives the numbers of the local
    file audited with scores only, same seed; result.json records the endpoint without its secrets."""
    served = Served(load_model(digits_model).classifier.module, token="s3cret")
    url = serve(served)
    local_model = local_scores(digits_model)
    local = audit_and_write(local_model, "digits", config=CONFIG).result
    out = tmp_path / "out"
    args = ["audit", "--endpoint", url + "?api_key=hidden", "--data", "digits", "--eps", "0.3", "--samples", "24",
            "--mia-samples", "60", "--attacks", "square", "--seed", "5", "--out", str(out), "--no-store",
            "--quiet", "--endpoint-header", "Authorization: Bearer s3cret"]  # fmt: skip
    code, output = modelsec_cli(args, capsys)
    assert code == 0, output
    text = (out / "result.json").read_text()
    assert "s3cret" not in text and "hidden" not in text
    d = json.loads(text)
    validate_result_dict(d)
    remote = AuditResult.from_dict(d)
    assert numbers(remote) == numbers(local)
    assert local.robustness is not None and local.robustness.robust_accuracy["0.3"] < local.robustness.clean_accuracy
    info = d["model"]
    assert info["format"] == "endpoint" and info["path"] is None and info["sha256"] is None
    e = info["endpoint"]
    assert e["url"] == url and e["output"] == "logits" and e["capability"] == "scores"
    assert e["headers"] == ["Authorization"] and e["retried"] == 0
    assert e["requests"] == served.posts and e["queries"] == served.records  # every record sent, counted
    # the local classifier counted every query the audit made; the endpoint saw them plus the one probe record
    assert e["queries"] == 1 + local_model.queries


def test_probabilities_and_labels_give_the_capability(digits_model: Path, serve: Any) -> None:
    """The first answer decides the capability; probabilities become their logs, labels a labels-only model."""
    module = load_model(digits_model).classifier.module
    splits = load_splits("digits", seed=0)
    request = LoadRequest(input_shape=splits.input_shape, num_classes=splits.num_classes, bounds=splits.bounds)
    x = torch.from_numpy(splits.nonmembers.x[:300])
    with torch.no_grad():
        logits = module(x)
    for mode, capability in [("probabilities", Capability.SCORES), ("labels", Capability.LABELS)]:
        loaded = wrap_object(endpoint(serve(Served(module, mode=mode)), batch_size=100), request)
        assert loaded is not None
        clf = loaded.classifier
        assert clf.capability == capability and loaded.info.endpoint is not None
        assert loaded.info.endpoint["output"] == mode
        out = clf.predict_logits(x)
        assert torch.equal(out.argmax(1), logits.argmax(1))
        if mode == "probabilities":
            torch.testing.assert_close(out, logits.log_softmax(1), atol=1e-5, rtol=0)
        assert loaded.info.endpoint is not None and clf.module.record()["requests"] == 1 + 3  # probe + 3 batches


def test_failing_server_gives_the_same_numbers(digits_model: Path, serve: Any) -> None:
    """A server failing 20% of its requests (HTTP 500, seeded): retries make the audit finish with the numbers of
    a server that never fails."""
    module = load_model(digits_model).classifier.module
    config = AuditConfig(eps=(0.3,), samples=12, mia_samples=40, attacks=("square",), seed=2)
    steady = audit_and_write(endpoint(serve(Served(module))), "digits", config=config).result
    flaky = Served(module, fail_rate=0.2)
    model = endpoint(serve(flaky), retries=8, backoff=0.001)
    r = audit_and_write(model, "digits", config=config).result
    assert numbers(r) == numbers(steady)
    assert flaky.failures > 0 and r.model.endpoint is not None
    assert r.model.endpoint["retried"] == flaky.failures and r.model.endpoint["requests"] == flaky.posts


def test_slow_server_is_retried_then_a_clear_error(
    digits_model: Path, serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(load_model(digits_model).classifier.module, delay=1.0)
    url = serve(served)
    args = ["audit", "--endpoint", url, "--data", "digits", "--samples", "4", "--out", str(tmp_path / "o"),
            "--no-store", "--quiet", "--endpoint-timeout", "0.1", "--endpoint-retries", "2",
            "--endpoint-backoff", "0"]  # fmt: skip
    code, output = modelsec_cli(args, capsys)
    assert code == 2, output
    assert "failed 3 tries" in output and "no answer within 0.1 s" in output
    assert "--endpoint-timeout" in output and "Traceback" not in output
    assert served.posts == 3


def test_query_budget_stops_the_audit_with_a_clear_message(
    digits_model: Path, serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(load_model(digits_model).classifier.module)
    args = ["audit", "--endpoint", serve(served), "--data", "digits", "--eps", "0.3", "--samples", "24",
            "--attacks", "square", "--out", str(tmp_path / "o"), "--no-store", "--quiet", "--query-budget", "500",
            "--endpoint-batch-size", "16"]  # fmt: skip
    code, output = modelsec_cli(args, capsys)
    assert code == 2, output
    assert "query budget of 500 records is spent" in output and "--query-budget" in output
    assert served.records <= 500  # never a record past the budget
    sent = int(output.split("spent: ")[1].split(" records")[0])
    assert sent == served.records and f"in {served.posts} requests" in output
    assert not (tmp_path / "o" / "result.json").exists()


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "did not answer a JSON object"),
        ("list", "did not answer a JSON object"),
        ("nan", "NaN or infinite"),
        ("short", "answered logits of shape (0,) for 1 records; expected (1, 10)"),
    ],
)
def test_answers_outside_the_protocol_are_clear_errors(
    digits_model: Path, serve: Any, tmp_path: Path, mode: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = serve(Served(load_model(digits_model).classifier.module, mode=mode))
    args = ["audit", "--endpoint", url, "--data", "digits", "--out", str(tmp_path / "o"), "--no-store", "--quiet"]
    code, output = modelsec_cli(args, capsys)
    assert code == 2, output
    assert message in output and "Traceback" not in output


def test_refused_request_names_the_header(digits_model: Path, serve: Any) -> None:
    url = serve(Served(load_model(digits_model).classifier.module, token="right"))
    with pytest.raises(EndpointError, match=r"HTTP 401.*--endpoint-header"):
        audit_and_write(endpoint(url, headers={"Authorization": "Bearer wrong"}), "digits", config=CONFIG)


def test_callable_hook_matches_the_local_model(digits_model: Path) -> None:
    """``modelsec.audit(model=fn)``: a function returning probabilities is audited as a scores-only model; one
    declared to return labels as a labels-only model."""
    import modelsec

    module = load_model(digits_model).classifier.module
    config = dict(eps=(0.3,), samples=12, mia_samples=40, attacks=("square",), seed=4)

    def logits_of(batch: np.ndarray) -> dict[str, Any]:
        with torch.no_grad():
            return {"logits": module(torch.from_numpy(batch)).numpy()}

    r = modelsec.audit(logits_of, "digits", **config)  # type: ignore[arg-type]
    local = modelsec.audit(local_scores(digits_model), "digits", **config)  # type: ignore[arg-type]
    assert numbers(r) == numbers(local) and r.model.format == "callable"
    assert r.model.endpoint is not None and r.model.endpoint["name"].endswith("logits_of")

    def probabilities_of(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).softmax(1).numpy()

    splits = load_splits("digits", seed=0)
    request = LoadRequest(input_shape=splits.input_shape, num_classes=splits.num_classes, bounds=splits.bounds)
    loaded = wrap_object(probabilities_of, request)
    assert loaded is not None and loaded.classifier.capability == Capability.SCORES
    labels = wrap_object(ScoreFunction(lambda b: probabilities_of(b).argmax(1), output="labels"), request)
    assert labels is not None and labels.classifier.capability == Capability.LABELS
    assert wrap_object(module, request) is None  # an nn.Module is not a scoring callable


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="http"):
        HttpEndpoint("ftp://example.com/x")
    with pytest.raises(ConfigError, match="--endpoint-timeout"):
        HttpEndpoint("http://example.com", timeout=0)
    with pytest.raises(ConfigError, match="--rate-limit"):
        HttpEndpoint("http://example.com", rate_limit=-1)
    with pytest.raises(ConfigError, match="output"):
        ScoreFunction(lambda b: b, output="scores")
    assert issubclass(EndpointError, ModelsecError) and issubclass(QueryBudgetError, ModelsecError)
    assert redact_url("http://u:p@[::1]:8080/a?k=v") == "http://[::1]:8080/a"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m.safetensors", "--endpoint", "http://127.0.0.1:9/p"], "not both"),
        (["--query-budget", "10"], "--query-budget only apply with --endpoint"),
        (["--endpoint", "http://127.0.0.1:9/p", "--endpoint-header", "no colon"], "Name: value"),
    ],
)
def test_cli_endpoint_option_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = modelsec_cli(
        ["audit", "--data", "digits", "--out", str(tmp_path / "o"), "--no-store", *args], capsys
    )
    assert code == 2 and message in output, output


def test_rate_limit_spaces_the_requests(digits_model: Path, serve: Any) -> None:
    """At 20 requests a second, 5 requests take at least 4 intervals of 50 ms (a lower bound: never flaky)."""
    client = HttpEndpoint(serve(Served(load_model(digits_model).classifier.module)), rate_limit=20)
    batch = np.zeros((2, 64), dtype=np.float32)
    t = time.monotonic()
    for _ in range(5):
        client(batch)
    assert time.monotonic() - t >= 4 * 0.05 - 1e-3
