"""salesflow.notify against a real HTTP receiver (http.server on 127.0.0.1, in a thread).

The wire shapes (generic JSON, Slack's {"text": ...}), rate limiting per key, secret
scrubbing of what is sent and of what is logged, and failures that are logged, never raised.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from salesflow.notify import (
    REDACTED,
    BurstDetector,
    CrashLoopDetector,
    Kind,
    Notifier,
    scrub,
    settings_secrets,
)
from salesflow.settings import Settings

HOOK_TOKEN = "T0001/B0002/hooksecretXYZ"  # the secret part of a webhook URL
DB_PASSWORD = "s3cr3t-db-pw"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    base: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    event: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def wait(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if state.delay:
                time.sleep(state.delay)
            state.requests.append(Received(self.path, dict(self.headers), json.loads(raw)))
            try:
                self.send_response(state.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def notifier_for(receiver: Receiver, *, slack: bool = False, webhook: bool = True,
                 **kwargs: Any) -> Notifier:
    values: dict[str, Any] = {"mart_db_password": SecretStr(DB_PASSWORD)}
    if webhook:
        values["notify_webhook_url"] = SecretStr(receiver.url(f"/hook/{HOOK_TOKEN}"))
    if slack:
        values["notify_slack_webhook_url"] = SecretStr(receiver.url(f"/services/{HOOK_TOKEN}"))
    return Notifier.from_settings(settings(**values), **kwargs)


# --- settings --------------------------------------------------------------------------------


def test_settings_are_optional_and_secret() -> None:
    s = settings()
    assert s.notify_webhook_url is None and s.notify_slack_webhook_url is None
    assert s.notify_min_interval_seconds == 300
    s = settings(notify_webhook_url="https://user:pw@example.invalid/x",
                 notify_slack_webhook_url=f"https://hooks.slack.com/services/{HOOK_TOKEN}")
    assert "example.invalid" not in repr(s) and HOOK_TOKEN not in repr(s)
    assert HOOK_TOKEN in settings_secrets(s)[-1]


def test_no_targets_sends_nothing(receiver: Receiver) -> None:
    notifier = Notifier.from_settings(settings())
    assert not notifier.enabled
    assert notifier.notify(Kind.DEPENDENCY_DOWN, "database down") is False
    assert receiver.requests == []


# --- the wire shapes -------------------------------------------------------------------------


def test_generic_webhook_gets_json(receiver: Receiver) -> None:
    notifier = notifier_for(receiver)
    assert notifier.notify(Kind.DEPENDENCY_DOWN, "database still failing after 5 attempts",
                           {"dependency": "database", "attempts": 5}) is True
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == f"/hook/{HOOK_TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    body = request.body
    assert set(body) == {"source", "kind", "severity", "summary", "details", "host", "time",
                         "suppressed"}
    assert body["source"] == "salesflow"
    assert body["kind"] == "dependency_down"
    assert body["severity"] == "critical"
    assert body["summary"] == "database still failing after 5 attempts"
    assert body["details"] == {"dependency": "database", "attempts": 5}
    assert body["suppressed"] == 0
    assert body["host"] == socket.gethostname()
    assert body["time"].endswith("+00:00")


def test_slack_webhook_gets_text(receiver: Receiver) -> None:
    notifier = notifier_for(receiver, slack=True, webhook=False)
    assert notifier.dead_letter_spike(250, 60, {"unparseable": 200, "missing_field": 50})
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == f"/services/{HOOK_TOKEN}"
    assert set(request.body) == {"text"}
    text = request.body["text"]
    assert text.startswith("[salesflow] WARNING dead_letter_spike: 250 records dead-lettered "
                           "in 60 s")
    assert "reason.unparseable: 200" in text and "reason.missing_field: 50" in text


def test_both_targets_get_it(receiver: Receiver) -> None:
    notifier = notifier_for(receiver, slack=True)
    assert notifier.worker_crash_loop(4, 600, RuntimeError("boom"))
    paths = sorted(r.path for r in receiver.requests)
    assert paths == [f"/hook/{HOOK_TOKEN}", f"/services/{HOOK_TOKEN}"]
    body = next(r.body for r in receiver.requests if r.path.startswith("/hook"))
    assert body["kind"] == "worker_crash_loop"
    assert body["details"] == {"starts": 4, "window_seconds": 600,
                               "last_error": "RuntimeError: boom"}


# --- rate limiting ---------------------------------------------------------------------------


def test_rate_limited_per_key(receiver: Receiver) -> None:
    clock = FakeClock()
    notifier = notifier_for(receiver, clock=clock, min_interval=300)
    assert notifier.notify(Kind.DEAD_LETTER_SPIKE, "first") is True
    clock.now += 10
    assert notifier.notify(Kind.DEAD_LETTER_SPIKE, "second") is False
    clock.now += 10
    assert notifier.notify(Kind.DEAD_LETTER_SPIKE, "third") is False
    # another kind, and the same kind for another subject, have their own budgets
    assert notifier.notify(Kind.WORKER_CRASH_LOOP, "other kind") is True
    assert notifier.dependency_down("database", "timeout") is True
    assert notifier.dependency_down("kafka", "timeout") is True
    assert notifier.dependency_down("database", "timeout again") is False
    assert [r.body["summary"] for r in receiver.requests] == [
        "first", "other kind", "database still failing", "kafka still failing"]
    # after the interval the next one goes out, counting what was held back
    clock.now += 300
    assert notifier.notify(Kind.DEAD_LETTER_SPIKE, "fourth") is True
    assert receiver.requests[-1].body["summary"] == "fourth"
    assert receiver.requests[-1].body["suppressed"] == 2
    clock.now += 300
    assert notifier.notify(Kind.DEAD_LETTER_SPIKE, "fifth") is True
    assert receiver.requests[-1].body["suppressed"] == 0


def test_rate_limit_is_thread_safe(receiver: Receiver) -> None:
    notifier = notifier_for(receiver, min_interval=300)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        notifier.notify(Kind.DEAD_LETTER_SPIKE, "burst"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert len(receiver.requests) == 1


def test_slack_text_mentions_suppressed(receiver: Receiver) -> None:
    clock = FakeClock()
    notifier = notifier_for(receiver, slack=True, webhook=False, clock=clock)
    notifier.notify("custom_kind", "one")
    notifier.notify("custom_kind", "two")
    clock.now += 301
    notifier.notify("custom_kind", "three")
    assert "(1 similar notification(s) suppressed" in receiver.requests[-1].body["text"]


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "leak"), [
    ("mysql+pymysql://salesflow:hunter2@mysql:3306/salesflow unreachable", "hunter2"),
    ("https://admin:pa%40ss@grafana.example/api", "pa%40ss"),
    ("connect failed: password=hunter2 user=x", "hunter2"),
    ("SALESFLOW_MART_DB_PASSWORD=hunter2", "hunter2"),
    ('{"password": "hunter 2", "user": "x"}', "hunter 2"),
    ("{'api_key': 'k-123456'}", "k-123456"),
    ("sasl.password: topsecret", "topsecret"),
    ("token=abcdef&x=1", "abcdef"),
    ("Authorization: Bearer eyJhbGciOi.J9.x", "eyJhbGciOi"),
    ("posting to https://hooks.slack.com/services/T1/B2/zzz failed", "T1/B2/zzz"),
])
def test_scrub_patterns(text: str, leak: str) -> None:
    cleaned = scrub(text)
    assert leak not in cleaned, cleaned
    assert REDACTED in cleaned


def test_scrub_keeps_harmless_text() -> None:
    text = "database unavailable after 5 attempts (mysql:3306), 12 rows, https://example.org/a"
    assert scrub(text) == text
    assert scrub("user@example.org wrote") == "user@example.org wrote"


def test_scrub_known_secret_values() -> None:
    assert scrub(f"failed with {DB_PASSWORD} inside", [DB_PASSWORD]) == (
        f"failed with {REDACTED} inside")


def test_nothing_secret_is_sent(receiver: Receiver) -> None:
    notifier = notifier_for(receiver, slack=True)
    error = RuntimeError(
        f"(pymysql.err.OperationalError) mysql+pymysql://salesflow:{DB_PASSWORD}@db/x; "
        f"password={DB_PASSWORD}; hook {receiver.url('/hook/' + HOOK_TOKEN)}")
    assert notifier.dependency_down("database", error, attempts=5)
    assert notifier.notify("custom", f"summary with {DB_PASSWORD}",
                           {"url": f"https://u:{DB_PASSWORD}@h/", "n": 3})
    assert len(receiver.requests) == 4
    for request in receiver.requests:
        raw = json.dumps(request.body)
        assert DB_PASSWORD not in raw, raw
        assert HOOK_TOKEN not in raw, raw
        assert REDACTED in raw


def test_urls_and_secrets_are_never_logged(receiver: Receiver,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = notifier_for(receiver, slack=True)
    notifier.notify(Kind.DEPENDENCY_DOWN, f"down, password={DB_PASSWORD}")
    receiver.status = 500
    notifier.notify(Kind.DEAD_LETTER_SPIKE, "spike")
    assert len(receiver.requests) == 4
    assert "HTTP 500" in caplog.text
    assert HOOK_TOKEN not in caplog.text
    assert DB_PASSWORD not in caplog.text


# --- failures are logged, never raised -------------------------------------------------------


def test_http_error_status_is_logged(receiver: Receiver,
                                     caplog: pytest.LogCaptureFixture) -> None:
    receiver.status = 503
    notifier = notifier_for(receiver)
    with caplog.at_level(logging.WARNING, logger="salesflow.notify"):
        assert notifier.notify(Kind.DEPENDENCY_DOWN, "x") is False
    assert "notification dependency_down to webhook failed: HTTP 503" in caplog.text


def test_unreachable_target_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notifier = Notifier.from_settings(settings(
        notify_webhook_url=f"http://127.0.0.1:{port}/hook/{HOOK_TOKEN}"))
    with caplog.at_level(logging.WARNING, logger="salesflow.notify"):
        assert notifier.notify(Kind.DEPENDENCY_DOWN, "x") is False
    assert "ConnectError" in caplog.text
    assert HOOK_TOKEN not in caplog.text


def test_slow_target_times_out(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.delay = 3.0
    notifier = notifier_for(receiver, timeout=0.3)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="salesflow.notify"):
        assert notifier.notify(Kind.DEPENDENCY_DOWN, "x") is False
    assert time.monotonic() - started < 2.5
    assert "ReadTimeout" in caplog.text


def test_a_broken_renderer_does_not_raise(receiver: Receiver,
                                          caplog: pytest.LogCaptureFixture) -> None:
    notifier = notifier_for(receiver)

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no")

    with caplog.at_level(logging.WARNING, logger="salesflow.notify"):
        assert notifier.notify(Kind.DEPENDENCY_DOWN, "x", {"bad": Unprintable()}) is False
    assert "not sent" in caplog.text


def test_default_timeout_is_short() -> None:
    from salesflow import notify

    assert 0 < notify.TIMEOUT_SECONDS <= 10


# --- detectors -------------------------------------------------------------------------------


def test_burst_detector() -> None:
    clock = FakeClock()
    burst = BurstDetector(threshold=10, window_seconds=60, clock=clock)
    assert burst.add(4) is False
    clock.now += 30
    assert burst.add(5) is False
    clock.now += 10
    assert burst.add(1) is True
    assert burst.count() == 10
    clock.now += 25  # the first 4 are now older than the window
    assert burst.add(0) is False
    assert burst.count() == 6


def test_crash_loop_detector(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state" / "starts"
    detector = CrashLoopDetector(path, window_seconds=600, max_starts=3, clock=clock)
    assert detector.record_start() == 1
    clock.now += 100
    # a new process: a new detector reading the same file
    detector = CrashLoopDetector(path, window_seconds=600, max_starts=3, clock=clock)
    assert detector.record_start() == 2
    clock.now += 100
    starts = detector.record_start()
    assert starts == 3 and detector.looping(starts)
    clock.now += 1000  # a quiet spell forgets the old starts
    assert detector.record_start() == 1


def test_crash_loop_detector_survives_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "starts"
    path.write_text("garbage\n12.5\n", encoding="utf-8")
    detector = CrashLoopDetector(path, window_seconds=1e12, clock=lambda: 100.0)
    assert detector.record_start() == 2
