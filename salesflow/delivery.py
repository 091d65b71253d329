"""A confluent-kafka producer whose every delivery report is checked.

Idempotence on and `acks=all`: the broker drops the producer's own retries, so a retried
batch is never written twice, and order per partition is kept. `close()` flushes and raises
`DeliveryError` naming how many records were not acknowledged: a run that could not deliver
everything must not look like a success.

While the broker is away librdkafka keeps every record and retries for the delivery timeout;
`on_wait` hears, every few seconds, that nothing has been acknowledged for a while (a person
then knows the producer waits rather than hangs).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from salesflow.errors import DeliveryError, KafkaSecurityError, SalesflowError
from salesflow.kafka import client_config, security_error
from salesflow.settings import Settings

STALL_REPORT_SECONDS = 5.0  # no acknowledgement for this long: tell `on_wait`


class Sender:
    """Counts records (not messages): a packed sales message carries many records."""

    def __init__(self, settings: Settings, delivery_timeout_s: float = 120.0,
                 on_delivered: Callable[[str, int], None] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self.denied: KafkaSecurityError | None = None  # an ACL refused a record
        self._producer = Producer(client_config(settings, **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.kbytes": 262144,
        }))
        self._topics: set[str] = set()
        self.delivered = 0
        self.delivered_by_topic: Counter[str] = Counter()
        self.failed = 0
        self.pending = 0
        self.last_error: str | None = None
        self._on_delivered = on_delivered
        self._on_wait = on_wait
        self._bootstrap = settings.kafka_bootstrap
        self._timeout_s = delivery_timeout_s
        self._progress_at = time.monotonic()  # the last acknowledgement (or the start)
        self._told_at = 0.0

    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
             records: int = 1) -> None:
        """Queue one message holding `records` records; blocks only while the queue is full."""
        kwargs = {"partition": partition} if partition is not None else {}
        callback = partial(self._report, topic, records)
        if self.pending <= 0:  # the wait for an acknowledgement starts now
            self._progress_at = time.monotonic()
        self.pending += records
        self._topics.add(topic)
        while True:
            try:
                self._fatal_guard(self._producer.produce, topic, value, key, headers=headers,
                                  on_delivery=callback, **kwargs)
                break
            except BufferError:
                self._fatal_guard(self._producer.poll, 0.05)
                self._tell_if_stalled()
        self._fatal_guard(self._producer.poll, 0)

    def _fatal_guard(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a producer method; a fatal error (an idempotent producer whose principal may
        not write: no IdempotentWrite) becomes one clear error. confluent-kafka raises it
        from whichever call serves it, as a SystemError caused by it when delivery reports
        were being served at the time."""
        try:
            return call(*args, **kwargs)
        except (KafkaException, SystemError) as exc:
            cause = exc if isinstance(exc, KafkaException) else exc.__cause__
            error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
            if not isinstance(error, KafkaError):
                raise
            raise security_error(
                error, self._settings, operation="IDEMPOTENT_WRITE, implied by WRITE on any "
                "topic", what=f"writing to {', '.join(sorted(self._topics))}") or DeliveryError(
                f"the producer failed: {error.str()}", undelivered=self.pending) from exc

    def _report(self, topic: str, records: int, err: KafkaError | None, _msg: Message) -> None:
        self._progress_at = time.monotonic()
        self.pending -= records
        if err is None:
            self.delivered += records
            self.delivered_by_topic[topic] += records
            if self._on_delivered:
                self._on_delivered(topic, records)
        else:
            self.failed += records
            self.last_error = err.str()
            self.denied = self.denied or security_error(err, self._settings, topic=topic,
                                                        operation="WRITE")

    def _tell_if_stalled(self) -> None:
        now = time.monotonic()
        stalled = now - self._progress_at
        if self._on_wait is None or self.pending <= 0 or stalled < STALL_REPORT_SECONDS or \
                now - self._told_at < STALL_REPORT_SECONDS:
            return
        self._told_at = now
        self._on_wait(f"waiting for Kafka at {self._bootstrap}: nothing acknowledged for "
                      f"{stalled:.0f}s, {self.pending:,} record(s) queued (each is retried for "
                      f"{self._timeout_s:.0f}s)")

    def close(self, timeout_s: float | None = None) -> None:
        """Flush; raise if anything was not acknowledged by the broker. Waits at most a little
        longer than the delivery timeout (after which librdkafka fails what is left)."""
        deadline = time.monotonic() + (self._timeout_s + 10 if timeout_s is None else timeout_s)
        while self._fatal_guard(self._producer.flush,
                                 max(0.0, min(1.0, deadline - time.monotonic()))):
            self._tell_if_stalled()
            if time.monotonic() >= deadline:
                self.last_error = self.last_error or "timed out waiting for acknowledgements"
                break
        lost = self.failed + self.pending
        if self.denied is not None:  # the reason, in one line, rather than a count
            raise self.denied
        if lost:
            raise DeliveryError(
                f"{lost} record(s) not delivered ({self.last_error})", undelivered=lost)

    def raise_if_failed(self) -> None:
        """`DeliveryError` as soon as any record has failed (a caller that need not go on)."""
        if self.failed:
            raise DeliveryError(f"{self.failed} record(s) not delivered ({self.last_error})",
                                undelivered=self.failed + self.pending)

    def abandon(self, timeout_s: float = 5.0) -> None:
        """After a failure elsewhere: give queued records a moment, raise nothing."""
        with contextlib.suppress(KafkaException, SystemError, SalesflowError):
            self._fatal_guard(self._producer.flush, timeout_s)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

