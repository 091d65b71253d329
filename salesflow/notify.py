"""Notifications of failures that need a person, sent to webhooks.

Most trouble shows up as a metric and an alert (ops/prometheus/alerts.yml, routed by
Alertmanager). This module is for the few failures the process itself knows need a person,
now: a dependency still down after the retry budget, a burst of dead letters, a worker that
keeps crashing. It sends each to every configured target:

    SALESFLOW_NOTIFY_WEBHOOK_URL        generic JSON webhook: {"source", "kind", "severity",
                                        "summary", "details", "host", "time", "suppressed"}
    SALESFLOW_NOTIFY_SLACK_WEBHOOK_URL  Slack-compatible incoming webhook: {"text": ...}
    SALESFLOW_NOTIFY_MIN_INTERVAL_SECONDS
                                        at most one notification per key per interval (300 s)

Rules it keeps:
* Rate-limited per key (the kind, or kind + subject such as the dependency): the first one
  goes out, repeats within the interval are counted and the count rides on the next one.
* Never carries a secret: summary and details are scrubbed (URL credentials, password/token
  assignments, bearer tokens, Slack hook paths, and the literal values of every secret
  setting) before they leave. The target URLs are secrets too and are never logged.
* Never raises and never blocks for long: httpx with a short timeout; a failed delivery is
  one warning in the log (without the URL) and `notify` returns False. It does block for up
  to the timeout per target, so async code calls it in an executor.

`dependency_down`, `dead_letter_spike` and `worker_crash_loop` word the three cases;
`BurstDetector` (n events within a window) and `CrashLoopDetector` (starts within a window,
kept in a file across restarts) tell a caller when to send them.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from salesflow.settings import Settings

log = logging.getLogger("salesflow.notify")

TIMEOUT_SECONDS = 5.0
MAX_TEXT = 2000  # characters of a summary or a detail value; longer text is cut
REDACTED = "***"


class Kind(StrEnum):
    """The failures worth a person's attention (free-form kinds are accepted too)."""

    DEPENDENCY_DOWN = "dependency_down"  # still failing after the retry budget
    DEAD_LETTER_SPIKE = "dead_letter_spike"  # a burst of dead-lettered records
    WORKER_CRASH_LOOP = "worker_crash_loop"  # a worker restarting again and again


# --- scrubbing -------------------------------------------------------------------------------

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_ASSIGNMENT = re.compile(
    r"""(?ix)
    (["']?)                                           # an optional quote (JSON, Python)
    ([\w.\-]*(?:passw(?:or)?d|pwd|secret|token|api[_\-]?key|access[_\-]?key|credential)
     [\w.\-]*)
    \1                                                # its closing quote
    (\s*[:=]\s*)
    (["']?)                                           # the value's quote
    (?:(?<=["'])[^"']*|[^\s"',;&)}\]]+)               # quoted: up to the quote; else a word
    """
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")
_SLACK_HOOK = re.compile(r"(?i)(hooks\.slack\.com/)[^\s\"'<>]+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without credentials: known secret values, URL user:password@, `password=...`,
    `"token": "..."`, bearer tokens and Slack hook paths become `***`."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{REDACTED}", text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _SLACK_HOOK.sub(rf"\1{REDACTED}", text)
    return text


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def settings_secrets(settings: Settings) -> list[str]:
    """The values of every secret setting (every `SecretStr` field that is set)."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.append(value.get_secret_value())
    return values


class _RedactFilter(logging.Filter):
    """Drops secret values from records of the HTTP libraries (httpx logs each request's URL
    at INFO, and a webhook URL is a credential)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = scrub(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_REDACT = _RedactFilter()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACT)


# --- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """What is sent: already scrubbed."""

    kind: str
    severity: str
    summary: str
    details: Mapping[str, Any]
    suppressed: int = 0
    host: str = field(default_factory=socket.gethostname)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True, slots=True)
class Target:
    """One webhook: `name` is what the log shows; `url` is a secret and never logged."""

    name: str
    url: SecretStr
    render: Callable[[Notification], dict[str, Any]]


def json_payload(n: Notification) -> dict[str, Any]:
    return {
        "source": "salesflow",
        "kind": n.kind,
        "severity": n.severity,
        "summary": n.summary,
        "details": dict(n.details),
        "host": n.host,
        "time": n.time,
        "suppressed": n.suppressed,
    }


def slack_payload(n: Notification) -> dict[str, Any]:
    lines = [f"[salesflow] {n.severity.upper()} {n.kind}: {n.summary}"]
    lines += [f"• {key}: {value}" for key, value in n.details.items()]
    if n.suppressed:
        lines.append(f"({n.suppressed} similar notification(s) suppressed since the last one)")
    lines.append(f"host {n.host}, {n.time}")
    return {"text": "\n".join(lines)}


# --- the notifier ----------------------------------------------------------------------------


class Notifier:
    """Sends notifications to its targets, at most one per key per `min_interval` seconds.

    Thread-safe. `notify` returns True when at least one target accepted the notification.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        min_interval: float = 300.0,
        secrets: Iterable[str] = (),
        timeout: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.targets = list(targets)
        self.min_interval = min_interval
        self._secrets = {s for s in secrets if s}
        self._secrets |= {t.url.get_secret_value() for t in self.targets}
        _REDACT.secrets |= self._secrets
        self._timeout = httpx.Timeout(timeout)
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Notifier:
        """Targets from the `notify_*` settings; with none set, `notify` does nothing."""
        targets = []
        if settings.notify_webhook_url is not None:
            targets.append(Target("webhook", settings.notify_webhook_url, json_payload))
        if settings.notify_slack_webhook_url is not None:
            targets.append(Target("slack", settings.notify_slack_webhook_url, slack_payload))
        kwargs.setdefault("min_interval", settings.notify_min_interval_seconds)
        return cls(targets, secrets=settings_secrets(settings), **kwargs)

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    def notify(
        self,
        kind: str,
        summary: str,
        details: Mapping[str, Any] | None = None,
        *,
        severity: str = "critical",
        key: str | None = None,
    ) -> bool:
        """Send one notification unless one with the same key went out within the interval.

        `key` refines the rate-limit key (`kind` alone by default), e.g. the dependency's
        name, so two failing dependencies are both reported. Never raises.
        """
        try:
            if not self.targets:
                return False
            limit_key = f"{kind}:{key}" if key else str(kind)
            with self._lock:
                now = self._clock()
                last = self._last_sent.get(limit_key)
                if last is not None and now - last < self.min_interval:
                    self._suppressed[limit_key] = self._suppressed.get(limit_key, 0) + 1
                    log.debug("notification %s suppressed (rate limit)", limit_key)
                    return False
                self._last_sent[limit_key] = now
                suppressed = self._suppressed.pop(limit_key, 0)
            notification = Notification(
                kind=str(kind),
                severity=str(severity),
                summary=self._clean(summary),
                details={str(k): self._value(v) for k, v in (details or {}).items()},
                suppressed=suppressed,
            )
            sent = [self._send(target, notification) for target in self.targets]
            return any(sent)
        except Exception as exc:  # a notifier must never take the caller down
            log.warning("notification %s not sent: %s", kind, type(exc).__name__)
            return False

    # --- the three failures this module exists for ---

    def dependency_down(self, dependency: str, error: BaseException | str,
                        attempts: int | None = None) -> bool:
        """A dependency still failing once the retry budget is spent (one key per dependency)."""
        spent = f" after {attempts} attempts" if attempts else ""
        return self.notify(
            Kind.DEPENDENCY_DOWN, f"{dependency} still failing{spent}",
            {"dependency": dependency, "error": _describe(error)}, key=dependency)

    def dead_letter_spike(self, count: int, window_seconds: float,
                          reasons: Mapping[str, int] | None = None) -> bool:
        """Many records dead-lettered within a short window."""
        details: dict[str, Any] = {"dead_letters": count, "window_seconds": window_seconds}
        details |= {f"reason.{reason}": n for reason, n in sorted((reasons or {}).items())}
        return self.notify(Kind.DEAD_LETTER_SPIKE,
                           f"{count} records dead-lettered in {window_seconds:g} s", details,
                           severity="warning")

    def worker_crash_loop(self, starts: int, window_seconds: float,
                          last_error: BaseException | str | None = None) -> bool:
        """A worker started `starts` times within the window: it keeps crashing."""
        details: dict[str, Any] = {"starts": starts, "window_seconds": window_seconds}
        if last_error is not None:
            details["last_error"] = _describe(last_error)
        return self.notify(Kind.WORKER_CRASH_LOOP,
                           f"worker on {socket.gethostname()} started {starts} times in "
                           f"{window_seconds:g} s", details)

    def _clean(self, text: Any) -> str:
        return _clip(scrub(str(text), self._secrets))

    def _value(self, value: Any) -> Any:
        if isinstance(value, bool | int | float) or value is None:
            return value
        return self._clean(value)

    def _send(self, target: Target, notification: Notification) -> bool:
        try:
            with httpx.Client(timeout=self._timeout, transport=self._transport,
                              follow_redirects=False) as client:
                response = client.post(target.url.get_secret_value(),
                                       json=target.render(notification))
            if response.is_success:
                log.info("notification %s sent to %s", notification.kind, target.name)
                return True
            log.warning("notification %s to %s failed: HTTP %d", notification.kind,
                        target.name, response.status_code)
        except httpx.HTTPError as exc:
            # The exception's text may hold the URL: only its class leaves this module.
            log.warning("notification %s to %s failed: %s", notification.kind, target.name,
                        type(exc).__name__)
        return False


def _describe(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


# --- detectors: when to call the notifier ----------------------------------------------------


class BurstDetector:
    """True once `threshold` events fell within the last `window_seconds` (e.g. dead letters).

    Call `add(n)` for each batch of events; it answers whether the window now holds a burst.
    """

    def __init__(self, threshold: int, window_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.window = window_seconds
        self._clock = clock
        self._events: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> bool:
        with self._lock:
            now = self._clock()
            self._events.append((now, n))
            self._events = [(t, k) for t, k in self._events if now - t < self.window]
            return self._count_unlocked() >= self.threshold

    def count(self) -> int:
        with self._lock:
            return self._count_unlocked()

    def _count_unlocked(self) -> int:
        return sum(k for _, k in self._events)


class CrashLoopDetector:
    """Counts this worker's starts within a window, in a small file that outlives the process.

    `record_start()` returns how many starts (this one included) fell within the last
    `window_seconds`; at `max_starts` or more the worker is crash-looping.
    """

    def __init__(self, path: Path, window_seconds: float = 600.0, max_starts: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.window = window_seconds
        self.max_starts = max_starts
        self._clock = clock

    def record_start(self) -> int:
        now = self._clock()
        starts = [t for t in self._read() if now - t < self.window] + [now]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(f"{t:.3f}\n" for t in starts), encoding="utf-8")
        except OSError as exc:
            log.warning("cannot record the worker start in %s: %s", self.path,
                        type(exc).__name__)
        return len(starts)

    def looping(self, starts: int) -> bool:
        return starts >= self.max_starts

    def _read(self) -> list[float]:
        try:
            lines = self.path.read_text(encoding="utf-8").split()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(float(line))
            except ValueError:
                continue
        return out
