"""The API token goes only into the Authorization header: never into a request body, a file written
or a line printed; plain http to another machine is refused; a long 429 wait is shown on the console."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from omegaconf import OmegaConf

from kkiai_pipeline import secrets
from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.api.errors import error_from_response
from kkiai_pipeline.errors import ApiError, ConfigError, StepInputError
from kkiai_pipeline.report.html import write_text_atomic
from kkiai_pipeline.rundir import RunRecord, StepRecord, write_json_atomic
from kkiai_pipeline.settings import check_pipeline_values, check_secure, is_loopback

from .api.helpers import FAST, VERSION, FakeTime, make_client, prediction, run
from .integration import TOKEN, Result, kkiai_run
from .test_cli import PIPELINE, write_pipeline

SECRET = "secret-token"  # the token of the api helpers' client


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    secrets.forget()
    yield
    secrets.forget()


# -- the redaction function ---------------------------------------------------------------------------


def test_a_registered_value_is_masked_in_every_form() -> None:
    token = 'ab"c<d>e f/g'
    secrets.register(token)
    text = f"raw {token} json {json.dumps(token)} html a&quot;... url ab%22c%3Cd%3Ee%20f%2Fg"
    assert secrets.redact(text) == 'raw [redacted] json "[redacted]" html a&quot;... url [redacted]'
    assert secrets.redact(f"html {'ab&quot;c&lt;d&gt;e f/g'}") == "html [redacted]"


def test_short_and_blank_values_are_not_registered() -> None:
    for value in (None, "", "   ", "t", "1234567"):
        secrets.register(value)
    assert not secrets.active()
    assert secrets.redact("t 1234567") == "t 1234567"


def test_find_names_the_path_to_the_value() -> None:
    secrets.register(SECRET)
    data = {"steps": {"a": {"input": {"prompt": "ok", "list": ["x", f"say {SECRET}"]}}}}
    assert secrets.find(data) == ("steps", "a", "input", "list", "1")
    assert secrets.find({SECRET: 1}) == ("[redacted]",)
    assert secrets.find({"a": ["fine"]}) is None


def test_error_messages_are_masked() -> None:
    secrets.register(SECRET)
    error = ConfigError(f"api.base_url must be an http(s) URL, not '{SECRET}'")
    assert str(error) == "api.base_url must be an http(s) URL, not '[redacted]'"


def test_an_api_answer_echoing_the_header_is_masked_everywhere_it_is_kept() -> None:
    secrets.register(SECRET)
    request = httpx.Request("POST", "https://api.example/v1/predictions")
    body = {"title": "Unauthenticated", "detail": f"bad header: Bearer {SECRET}", "echo": [SECRET]}
    response = httpx.Response(401, json=body, request=request)
    error = error_from_response(response)
    assert str(error) == (
        "the API answered 401 to POST /v1/predictions: Unauthenticated: bad header: Bearer [redacted] "
        "(check KKIAI_API_TOKEN)"
    )
    assert error.detail == "bad header: Bearer [redacted]"
    assert SECRET not in json.dumps(error.body)


def test_log_records_are_masked_arguments_and_tracebacks_included(tmp_path: Path) -> None:
    logger = logging.getLogger("kkiai_pipeline.test_secrets")
    handler = logging.FileHandler(tmp_path / "run.log")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        secrets.register(SECRET)  # puts the filter on the root logger's handlers
        assert any(isinstance(f, secrets.RedactingFilter) for f in handler.filters)
        logger.warning("answer: %s", {"echo": SECRET})
        try:
            raise ValueError(f"failed with {SECRET}")
        except ValueError:
            logger.exception("boom %s", SECRET)
    finally:
        root.removeHandler(handler)
        handler.close()
    text = (tmp_path / "run.log").read_text()
    assert SECRET not in text
    assert "answer: {'echo': '[redacted]'}" in text
    assert "ValueError: failed with [redacted]" in text


def test_run_json_its_journal_and_report_html_are_masked(tmp_path: Path) -> None:
    secrets.register(SECRET)
    write_json_atomic(tmp_path / "a.json", {"input": {"prompt": SECRET}})
    assert json.loads((tmp_path / "a.json").read_text()) == {"input": {"prompt": "[redacted]"}}
    record = RunRecord(run_dir=tmp_path, pipeline="p", api={}, steps={"s": StepRecord("m", "v")})
    record.steps["s"].input = {"prompt": SECRET}
    record.note("s")
    assert SECRET not in (tmp_path / "run.journal").read_text()
    record.close()
    assert SECRET not in (tmp_path / "run.json").read_text()
    write_text_atomic(tmp_path / "report.html", f"<p>{SECRET}</p>")
    assert (tmp_path / "report.html").read_text() == "<p>[redacted]</p>"


# -- the client: the token only in the header ----------------------------------------------------------


def test_a_create_whose_input_holds_the_token_is_refused_before_sending() -> None:
    secrets.register(SECRET)
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json=prediction("succeeded", ["x"]))

    client = make_client(handler)
    with pytest.raises(StepInputError) as caught:
        run(client, lambda c: c.create(VERSION, {"prompt": "a lamp", "extra": {"note": f"k={SECRET}"}}))
    assert str(caught.value) == (
        "input.extra.note holds the API token's value: refused before sending (no prediction made); "
        "the token belongs only in the environment"
    )
    assert sent == []
    created = run(make_client(handler), lambda c: c.create(VERSION, {"prompt": "a lamp"}))
    assert created.status == "succeeded"
    assert sent[0].headers["authorization"] == f"Bearer {SECRET}"


def _throttled(retry_after: str) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": retry_after})

    return handler


def test_a_long_429_wait_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    options = ClientOptions(**{**FAST.__dict__, "max_attempts": 2})
    time = FakeTime()
    client = make_client(_throttled("100000"), options=options, time=time)
    with caplog.at_level(logging.INFO, logger="kkiai_pipeline.api.client"), pytest.raises(ApiError):
        run(client, lambda c: c.get("p1"))
    assert time.sleeps == [60.0]  # max_wait caps the server's ask
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "GET /replicate/v1/predictions/p1: the API is rate limiting (429); waiting 60 s before trying again"
    ]


def test_a_short_429_wait_stays_in_the_log_file(caplog: pytest.LogCaptureFixture) -> None:
    options = ClientOptions(**{**FAST.__dict__, "max_attempts": 2})
    client = make_client(_throttled("2"), options=options)
    with caplog.at_level(logging.INFO, logger="kkiai_pipeline.api.client"), pytest.raises(ApiError):
        run(client, lambda c: c.get("p1"))
    assert [r.levelno for r in caplog.records] == [logging.INFO]


# -- settings: plain http, a token in the pipeline --------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "[::1]", "api.localhost"])
def test_plain_http_to_this_machine_is_fine(host: str) -> None:
    check_secure(f"http://{host}:8000/v1")
    assert is_loopback(host)


def test_plain_http_to_another_machine_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        check_secure("http://10.0.0.5:8000/v1")
    assert str(caught.value) == (
        "api.base_url is plain http to 10.0.0.5, which is not this machine: the API token would travel "
        "unencrypted. Use https, or set api.allow_insecure_http=true if the network between them is trusted"
    )
    check_secure("https://10.0.0.5/v1")


def test_a_pipeline_value_holding_the_token_is_refused_naming_step_and_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KKIAI_API_TOKEN", SECRET)
    secrets.register(SECRET)
    node = OmegaConf.create({"steps": {"gen": {"input": {"prompt": "${oc.env:KKIAI_API_TOKEN}"}}}})
    with pytest.raises(ConfigError) as caught:
        check_pipeline_values(node)
    assert str(caught.value) == (
        "pipeline step 'gen', field 'input.prompt' holds the API token (the value of KKIAI_API_TOKEN): it "
        "would be sent to the model and recorded. Nothing was sent; the token belongs only in the environment"
    )
    with pytest.raises(ConfigError, match=r"^pipeline field 'params\.x' holds the API token"):
        check_pipeline_values({"params": {"x": SECRET}})
    check_pipeline_values(OmegaConf.create({"steps": {"gen": {"input": {"prompt": "a lamp"}}}}))


# -- the real command -------------------------------------------------------------------------------------


class _EchoServer(ThreadingHTTPServer):
    """Answers every request with ``status`` and a problem+json body echoing its Authorization header."""

    daemon_threads = True

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.status = status
        self.extra_headers = headers or {}
        self.requests: list[tuple[str, str, bytes]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Echo(BaseHTTPRequestHandler):
    server: _EchoServer

    def do_GET(self) -> None:
        self._echo()

    def do_POST(self) -> None:
        self._echo()

    def _echo(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.requests.append((self.command, self.path, body))
        header = self.headers.get("authorization", "")
        problem = {"title": "Echo", "detail": f"you sent {header}", "request": {"authorization": header}}
        data = json.dumps(problem).encode()
        self.send_response(self.server.status, f"Echo {header}")
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[Any]:
    servers: list[_EchoServer] = []

    def start(status: int, headers: dict[str, str] | None = None) -> _EchoServer:
        server = _EchoServer(status, headers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def assert_token_nowhere(result: Result) -> None:
    """Not printed, nor in any file under the test's folder (run directory, .hydra/, the ledger)."""
    assert TOKEN not in result.stdout + result.stderr
    for path in result.run_dir.parent.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("status", [401, 500])
def test_an_answer_echoing_the_token_leaves_it_nowhere(tmp_path: Path, echo: Any, status: int) -> None:
    server = echo(status)
    result = kkiai_run(
        "pipeline=product_shots", f"api.base_url={server.base_url}", "api.max_attempts=1", cwd=tmp_path
    )
    assert result.code == 1, result.stderr
    assert server.requests, "the run never reached the API"
    files = {p.name for p in result.run_dir.rglob("*")}
    assert {"run.log", "run.json", "report.html", "config.yaml", "overrides.yaml"} <= files
    assert_token_nowhere(result)
    assert "Bearer [redacted]" in (result.run_dir / "run.log").read_text()
    assert "Bearer [redacted]" in (result.run_dir / "run.json").read_text()
    assert "Bearer [redacted]" in result.stderr


@pytest.mark.parametrize(
    "word",
    [
        f"api.token_env={TOKEN}",
        f"+api={{token:{TOKEN}}}",
        f"pipeline.params.subject={TOKEN}",
        f"+x.y={TOKEN}",
        f"+{TOKEN}=1",
    ],
)
def test_an_override_holding_the_token_is_refused_before_hydra(tmp_path: Path, word: str) -> None:
    result = kkiai_run("pipeline=product_shots", "api=sandbox", word, cwd=tmp_path)
    assert result.code == 2
    assert_token_nowhere(result)
    assert not result.run_dir.exists()
    shown = "number 3" if word.startswith(f"+{TOKEN}") else f"'{word.split('=')[0].lstrip('+')}'"
    assert result.stderr == (
        f"kkiai-run: error: command-line argument {shown} holds the API token: the token is read only from "
        "the environment (KKIAI_API_TOKEN, or the variable api.token_env names), so that it is never "
        "written to disk. Nothing was run\n"
    )


def test_the_token_env_named_on_the_command_line_is_checked_too(tmp_path: Path) -> None:
    env = {"MY_TOKEN": "another-token-9a7c"}
    result = kkiai_run(
        "pipeline=product_shots", "api.token_env=MY_TOKEN", "seed=another-token-9a7c", cwd=tmp_path, env=env
    )
    assert result.code == 2
    assert "another-token-9a7c" not in result.stderr
    assert result.stderr.startswith("kkiai-run: error: command-line argument 'seed' holds the API token")


def test_a_pipeline_reading_the_token_is_refused_and_sends_nothing(tmp_path: Path, echo: Any) -> None:
    server = echo(500)
    body = PIPELINE.format(name="leak", prompt="${oc.env:KKIAI_API_TOKEN}")
    write_pipeline(tmp_path / "pipelines", "leak", body)
    result = kkiai_run("pipeline=leak", f"api.base_url={server.base_url}", cwd=tmp_path)
    assert result.code == 2
    assert result.stderr == (
        "kkiai-run: error: pipeline step 'only', field 'input.prompt' holds the API token (the value of "
        "KKIAI_API_TOKEN): it would be sent to the model and recorded. Nothing was sent; the token belongs "
        "only in the environment\n"
    )
    assert server.requests == []
    assert not result.run_dir.exists()


def test_plain_http_to_another_machine_needs_the_setting(tmp_path: Path) -> None:
    args = ["pipeline=product_shots", "api.base_url=http://192.0.2.7/v1", "dry_run=true"]
    refused = kkiai_run(*args, cwd=tmp_path, run_dir=tmp_path / "r1")
    assert refused.code == 2
    assert refused.stderr.startswith("kkiai-run: error: api.base_url is plain http to 192.0.2.7")
    assert not refused.run_dir.exists()
    allowed = kkiai_run(*args, "api.allow_insecure_http=true", cwd=tmp_path, run_dir=tmp_path / "r2")
    assert allowed.code == 0, allowed.stderr


def test_a_long_429_wait_is_shown_on_the_console(tmp_path: Path, echo: Any) -> None:
    server = echo(429, {"Retry-After": "100000"})
    result = kkiai_run(
        "pipeline=product_shots",
        f"api.base_url={server.base_url}",
        "api.max_attempts=2",
        "api.max_wait=5.5",
        cwd=tmp_path,
    )
    assert result.code == 1
    assert (
        "WARNING: POST /v1/predictions: the API is rate limiting (429); waiting 6 s before trying again"
        in result.stderr
    )
    assert_token_nowhere(result)
