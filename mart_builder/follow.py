"""`salesflow marts follow`: the mart builder as its own long-running process.

Followers of a namespace join one consumer group on a one-partition topic
(`Topics.marts_leader`); the member that holds its partition flushes every
`SALESFLOW_FLUSH_INTERVAL_SECONDS`, the others wait as hot standbys. Kafka's group membership
is the election: a stopped or dead follower's partition moves to a standby within the
session timeout (at once when it stops cleanly: it leaves the group).

The main thread keeps the group membership and answers signals; flushes run in their own
thread. A flush that overruns its interval is not queued up: the next one starts as soon as
it ends, from the newest state, and `salesflow_mart_flush_lag_seconds` says how late it
started. SIGTERM stops a flush in progress between two of its steps (its transaction rolls
back: the next leader redoes it) and the process exits within `SHUTDOWN_GRACE_SECONDS`,
whatever the flush is doing: a flush still stuck in the database by then is abandoned, and
the server rolls it back when the connection closes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from confluent_kafka import Consumer

from mart_builder.builder import FlushResult, MartBuilder
from mart_builder.cancel import CancelCheck, Cancelled, never
from mart_builder.commands import open_writer
from salesflow import instrumentation
from salesflow.errors import DependencyUnavailable, SalesflowError
from salesflow.kafka import CONNECTION, check_reachable, client_config, ensure_topics
from salesflow.notify import Notifier
from salesflow.retry import dependency_of
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

SHUTDOWN_GRACE_SECONDS = 5.0


class PeriodicFlusher:
    """What the leading follower runs every `SALESFLOW_FLUSH_INTERVAL_SECONDS`.

    A failed flush is one clear log line, a metric, and a row in the flush log (when the
    database answers) that `salesflow status` shows; its work stays to do and the next
    interval retries it.
    """

    NOTIFY_AFTER_FAILURES = 3

    def __init__(self, settings: Settings, cancelled: CancelCheck = never) -> None:
        self.settings = settings
        self.cancelled = cancelled
        self.builder: MartBuilder | None = None
        self.failures = 0
        self.notifier = Notifier.from_settings(settings)

    def run_once(self) -> FlushResult | None:
        try:
            if self.builder is None:  # the next interval is the retry
                self.builder = MartBuilder(self.settings, open_writer(self.settings, 1),
                                           cancelled=self.cancelled)
            result = self.builder.flush()
            self.failures = 0
            if result.customer_rows or result.team_rows or result.deleted_rows:
                log.info("mart flush: %d customer rows, %d team rows (%d deleted) in %.2fs "
                         "(reading %d records %.2fs, writing %.2fs)", result.customer_rows,
                         result.team_rows, result.deleted_rows, result.seconds,
                         result.records_read, result.read_seconds, result.write_seconds)
            if result.refused:
                log.error("mart flush: the database refused %d row(s), quarantined "
                          "(salesflow status): %s", len(result.refused),
                          result.refused[0].error)
            return result
        except Cancelled:
            log.info("mart flush stopped before it committed")
        except SalesflowError as exc:
            instrumentation.FLUSH_FAILURES.labels(kind=type(exc).__name__).inc()
            log.error("mart flush failed, will retry in %.0fs: %s",
                      self.settings.flush_interval_seconds, exc)
            self._record(str(exc))
            if isinstance(exc, DependencyUnavailable):
                self._dependency_failed(exc)
        except Exception as exc:
            instrumentation.FLUSH_FAILURES.labels(kind=type(exc).__name__).inc()
            log.exception("mart flush failed unexpectedly")
            self._record(f"unexpected {type(exc).__name__}: {exc}")
        return None

    def _record(self, error: str) -> None:
        """The failure where `salesflow status` reads it, when the database answers."""
        writer = getattr(self.builder, "writer", None)
        if writer is None:
            return
        try:
            writer.record_failure(self._scrub(error))
        except SalesflowError as exc:
            log.debug("could not log the failed flush: %s", exc)

    def _scrub(self, text: str) -> str:
        """Defence in depth: no configured secret may reach the flush log."""
        s = self.settings
        for secret in (s.mart_db_password, s.kafka_sasl_password, s.kafka_ssl_key_password,
                       s.notify_webhook_url, s.notify_slack_webhook_url):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return text

    def _dependency_failed(self, exc: DependencyUnavailable) -> None:
        """A transient failure of Kafka or the database: a retry; a person is told once
        it has failed NOTIFY_AFTER_FAILURES times in a row."""
        dependency = dependency_of(exc, "database")
        self.failures += 1
        instrumentation.RETRIES.labels(dependency=dependency).inc()
        if self.failures == self.NOTIFY_AFTER_FAILURES:
            instrumentation.FAILURES.labels(dependency=dependency).inc()
            what = "Kafka" if dependency == "kafka" else "mart database"
            self.notifier.dependency_down(what, exc, attempts=self.failures)


class Follower:
    """One `marts follow` process: waits for leadership, then flushes periodically."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.namespace)
        self.leading = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._regained = False  # leadership (re)gained: what the tables hold may differ
        self.flusher = PeriodicFlusher(settings, cancelled=self._cancelled)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _cancelled(self) -> bool:
        return self._stopping.is_set() or not self.leading.is_set()

    def run(self) -> None:
        settings, topics = self.settings, self.topics
        with CONNECTION.starting():
            check_reachable(settings)
        ensure_topics(settings, [topics.marts_leader], partitions=1)
        consumer = Consumer(client_config(settings, **{
            "group.id": topics.marts_group, "enable.auto.commit": False,
            "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
            "heartbeat.interval.ms": max(100, int(settings.session_timeout_seconds * 1000 / 6)),
            "max.poll.interval.ms": 3_600_000}))
        consumer.subscribe([topics.marts_leader], on_assign=self._assigned,
                           on_revoke=self._revoked, on_lost=self._revoked)
        flushes = threading.Thread(target=self._flush_loop, name="mart-flush", daemon=True)
        flushes.start()
        log.info("mart follower ready: group %s; flushing when it leads", topics.marts_group)
        try:
            while not self._stopping.is_set():
                consumer.poll(0.2)
        finally:
            self.stop()
            flushes.join(SHUTDOWN_GRACE_SECONDS)
            if flushes.is_alive():
                log.warning("a flush was still running %.0fs after the stop; exiting without "
                            "it (the database rolls it back)", SHUTDOWN_GRACE_SECONDS)
            consumer.close()  # leaves the group: a standby takes over at once
            if not flushes.is_alive() and self.flusher.builder is not None:
                self.flusher.builder.close()

    def _flush_loop(self) -> None:
        """Flush every interval while leading; an overrun is not queued up."""
        interval = self.settings.flush_interval_seconds
        due: float | None = None
        while not self._stopping.is_set():
            now = time.monotonic()
            if not self.leading.is_set():
                due = None
            elif due is None or now >= due:
                started = now
                instrumentation.FLUSH_LAG.set(0.0 if due is None else started - due)
                builder = self.flusher.builder
                if self._regained:
                    self._regained = False
                    if builder is not None:
                        builder.invalidate()
                self.flusher.run_once()
                due = started + interval
                continue
            self._wake.wait(0.2 if due is None else min(0.2, max(0.0, due - now)))
            self._wake.clear()

    def _assigned(self, _consumer: Consumer, partitions: list) -> None:
        if partitions:
            log.info("this follower now flushes the marts of %s", self.settings.namespace)
            self._regained = True
            self.leading.set()
            self._wake.set()

    def _revoked(self, _consumer: Consumer, partitions: list) -> None:
        if partitions:
            log.info("this follower no longer flushes (another one took over)")
            self.leading.clear()


def run_follower(settings: Settings) -> None:
    """`salesflow marts follow`, until SIGTERM or SIGINT."""
    follower = Follower(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: follower.stop())
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_bind)
    follower.run()
