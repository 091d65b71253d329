"""`salesflow marts follow`: the mart builder as its own long-running process.

Followers of a namespace join one consumer group on a one-partition topic
(`Topics.marts_leader`); the member that holds its partition flushes every
`SALESFLOW_FLUSH_INTERVAL_SECONDS`, the others wait as hot standbys. Kafka's group membership
is the election: a stopped or dead follower's partition moves to a standby within the
session timeout. A flush that overruns its interval is not queued up: the next one starts
when it ends, from the newest state.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from confluent_kafka import Consumer

from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from salesflow import instrumentation
from salesflow.errors import DependencyUnavailable, KafkaUnavailable, SalesflowError
from salesflow.kafka import CONNECTION, check_reachable, client_config, ensure_topics
from salesflow.notify import Notifier
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")


class PeriodicFlusher:
    """What the leading follower runs every `SALESFLOW_FLUSH_INTERVAL_SECONDS`.

    A failed flush is one clear log line and a metric; its work stays dirty and the next
    interval retries it.
    """

    NOTIFY_AFTER_FAILURES = 3

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.builder: MartBuilder | None = None
        self.failures = 0
        self.notifier = Notifier.from_settings(settings)

    def run_once(self) -> None:
        try:
            if self.builder is None:  # the next interval is the retry
                self.builder = MartBuilder(self.settings, open_writer(self.settings, 1))
            result = self.builder.flush()
            self.failures = 0
            if result.customer_rows or result.team_rows:
                log.info("mart flush: %d customer rows, %d team rows in %.2fs",
                         result.customer_rows, result.team_rows, result.seconds)
        except SalesflowError as exc:
            instrumentation.FLUSH_FAILURES.labels(kind=type(exc).__name__).inc()
            log.error("mart flush failed, will retry in %.0fs: %s",
                      self.settings.flush_interval_seconds, exc)
            if isinstance(exc, DependencyUnavailable):
                self._dependency_failed(exc)
        except Exception as exc:
            instrumentation.FLUSH_FAILURES.labels(kind=type(exc).__name__).inc()
            log.exception("mart flush failed unexpectedly")

    def _dependency_failed(self, exc: DependencyUnavailable) -> None:
        """A transient failure of Kafka or the database: a retry; a person is told once
        it has failed NOTIFY_AFTER_FAILURES times in a row."""
        dependency = "kafka" if isinstance(exc, KafkaUnavailable) else "database"
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
        self.flusher = PeriodicFlusher(settings)
        self.leading = threading.Event()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

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
        log.info("mart follower ready: group %s; flushing when it leads", topics.marts_group)
        next_flush = time.monotonic()
        try:
            while not self._stopping.is_set():
                consumer.poll(0.2)
                if self.leading.is_set() and time.monotonic() >= next_flush:
                    self.flusher.run_once()
                    next_flush = time.monotonic() + settings.flush_interval_seconds
        finally:
            consumer.close()
            if self.flusher.builder is not None:
                self.flusher.builder.close()

    def _assigned(self, _consumer: Consumer, partitions: list) -> None:
        if partitions:
            log.info("this follower now flushes the marts of %s", self.settings.namespace)
            self.leading.set()

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
