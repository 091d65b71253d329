"""A confluent-kafka producer whose every delivery report is checked.

Idempotence on and `acks=all`: the broker drops the producer's own retries, so a retried
batch is never written twice, and order per partition is kept. `close()` flushes and raises
`DeliveryError` naming how many records were not acknowledged: a run that could not deliver
everything must not look like a success.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from salesflow.errors import DeliveryError, KafkaSecurityError, SalesflowError
from salesflow.kafka import client_config, security_error
from salesflow.settings import Settings


class Sender:
    """Counts records (not messages): a packed sales message carries many records."""

    def __init__(self, settings: Settings, delivery_timeout_s: float = 120.0,
                 on_delivered: Callable[[str, int], None] | None = None) -> None:
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

    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
             records: int = 1) -> None:
        """Queue one message holding `records` records; blocks only while the queue is full."""
        kwargs = {"partition": partition} if partition is not None else {}
        callback = partial(self._report, topic, records)
        self.pending += records
        self._topics.add(topic)
        while True:
            try:
                self._fatal_guard(self._producer.produce, topic, value, key, headers=headers,
                                  on_delivery=callback, **kwargs)
                break
            except BufferError:
                self._fatal_guard(self._producer.poll, 0.05)
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

    def close(self, timeout_s: float = 130.0) -> None:
        """Flush; raise if anything was not acknowledged by the broker."""
        if self._fatal_guard(self._producer.flush, timeout_s):
            self.last_error = self.last_error or "timed out waiting for acknowledgements"
        lost = self.failed + self.pending
        if self.denied is not None:  # the reason, in one line, rather than a count
            raise self.denied
        if lost:
            raise DeliveryError(
                f"{lost} record(s) not delivered ({self.last_error})", undelivered=lost)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(KafkaException, SystemError, SalesflowError):
                self._fatal_guard(self._producer.flush, 5)

