"""Everything the agent writes, through one idempotent confluent-kafka producer, in batches.

A message of `<ns>.sales` causes up to a few records per sale: table changelog records, the
accepted sales, dead letters, re-published parked sales. Faust's Python producer costs about
250 µs a record; librdkafka takes a record in a few µs and sends them in bulk. The agent opens
one `Batch` per message and waits for `done()`: the broker has acknowledged every record, or
the batch raises and the worker exits without committing. Idempotence and `acks=all` keep the
order per partition and write no record twice on the producer's own retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from confluent_kafka import KafkaError, Message, Producer

from salesflow.errors import DeliveryError
from salesflow.kafka import client_config
from salesflow.settings import Settings

Headers = list[tuple[str, bytes]] | Mapping[str, bytes] | None


class Sink:
    def __init__(self, settings: Settings, delivery_timeout_s: float = 60.0) -> None:
        self.timeout = delivery_timeout_s
        self._producer = Producer(client_config(settings, **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,  # `done()` flushes at once anyway; this only batches timers' sends
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.kbytes": 262144,
        }))
        # One flush at a time: delivery callbacks then run in one thread, and a flush that
        # returns has run the callbacks of every record queued before it.
        self._flushing = asyncio.Lock()

    def batch(self) -> Batch:
        return Batch(self)


class Batch:
    """The records of one message; `done()` returns once the broker has all of them."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._pending = 0
        self._failed: list[str] = []
        self.last_offsets: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset

    def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
             partition: int, headers: Headers = None) -> None:
        producer = self._sink._producer
        self._pending += 1
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, headers=headers,
                                 on_delivery=self._report)
                return
            except BufferError:  # the local queue is full: let librdkafka drain it
                producer.poll(0.05)

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        self._pending -= 1
        if err is not None:
            self._failed.append(err.str())
        else:
            key = (msg.topic(), msg.partition())
            self.last_offsets[key] = max(msg.offset(), self.last_offsets.get(key, -1))

    async def done(self) -> None:
        """Wait for every acknowledgement (in a thread: the event loop keeps running)."""
        sink = self._sink
        if self._pending:
            async with sink._flushing:
                if self._pending:  # another batch's flush may have served this one
                    await asyncio.get_running_loop().run_in_executor(
                        None, sink._producer.flush, sink.timeout + 10)
        if self._failed or self._pending:
            lost = len(self._failed) + self._pending
            reason = self._failed[0] if self._failed else "timed out"
            raise DeliveryError(f"{lost} record(s) not acknowledged ({reason})",
                                undelivered=lost)
