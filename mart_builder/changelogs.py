"""Following the stream app's changelogs and the dimension topics (the builder's Kafka I/O).

No consumer group: every partition is assigned from its beginning and nothing is committed,
so a restarted builder simply reads them again. `catch_up` reads every source up to its end
as of the call (read_committed: records of a transaction still open are left for the next
flush), handing each record to its topic's handler; it stops early, with `Cancelled`, as soon
as `cancelled()` says so, and fails with `KafkaUnavailable` (never a bare timeout) when Kafka
does not answer or stops delivering.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from mart_builder.cancel import CancelCheck, checker, never
from salesflow.errors import KafkaUnavailable
from salesflow.kafka import admin, create, end_offsets
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

Handler = Callable[[int, bytes | None, bytes | None], None]
"""(partition, key, value or None for a tombstone) -> None"""

# Errors a consumer reports while librdkafka itself retries (a broker restarting): the
# stall timeout, not the first such event, decides that Kafka is unavailable.
_PASSING = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
            KafkaError._RESOLVE, KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.LEADER_NOT_AVAILABLE}


class ChangelogReader:
    """Reads the builder's source topics into their handlers, up to date on each call."""

    REQUEST_TIMEOUT = 10.0  # seconds for one metadata or offsets request
    STALL_SECONDS = 30.0  # nothing delivered for this long while behind: Kafka is unavailable
    OPEN_TRANSACTION_SECONDS = 0.5  # at the last stable offset this long: leave the rest

    def __init__(self, settings: Settings, handlers: Mapping[str, Handler]) -> None:
        self.settings = settings
        self.handlers = dict(handlers)
        self.positions: dict[tuple[str, int], int] = {}  # next offset to read
        self._consumer: Consumer | None = None
        self._admin = None
        self._complete = False  # every source topic exists and is assigned
        self._at_stable_end: dict[tuple[str, int], int] = {}  # where each last hit its end

    def catch_up(self, cancelled: CancelCheck = never) -> int:
        """Read every source up to its end as of now; returns the records applied.

        "Its end" is the high watermark the consumer last saw (its fetches long-poll, so it is
        at most `fetch.wait.max.ms` old; no request per flush: the broker's ListOffsets
        answered in seconds now and then under load). A partition whose end is a transaction
        still open stops at the last stable offset: the consumer says so (end of partition)
        and, once its position stays there for `OPEN_TRANSACTION_SECONDS`, the rest is left
        for the next flush. One metadata request per call tells whether Kafka answers.
        """
        check = checker(cancelled)
        try:
            consumer = self._connect()
            consumer.list_topics(next(iter(self.handlers)), timeout=self.REQUEST_TIMEOUT)
            ends: dict[tuple[str, int], int] = {}
            for tp in self.positions:
                high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)[1]
                if high >= 0:
                    ends[tp] = high
            unknown = [tp for tp in self.positions if tp not in ends]
            if unknown:  # not fetched yet (just assigned): ask the broker
                ends |= end_offsets(self.settings, unknown, self.REQUEST_TIMEOUT,
                                    committed=True, client=self._admin)
        except KafkaException as exc:
            raise KafkaUnavailable(f"reading the changelogs: {exc}") from exc
        positions = self.positions
        behind = {tp for tp, end in ends.items() if positions.get(tp, 0) < end}
        moved = dict.fromkeys(behind, time.monotonic())  # when each one's position moved
        applied = 0
        handlers, at_stable_end = self.handlers, self._at_stable_end
        progress = time.monotonic()
        try:
            while behind:
                check()
                try:  # a short wait: consume() waits it out unless the batch fills up
                    batch = consumer.consume(5000, timeout=0.02)
                except KafkaException as exc:
                    raise KafkaUnavailable(f"reading the changelogs: {exc}") from exc
                now = time.monotonic()
                if batch:
                    progress = now
                elif now - progress > self.STALL_SECONDS:
                    raise KafkaUnavailable(
                        f"reading the changelogs: nothing delivered for {self.STALL_SECONDS:.0f}s "
                        f"with {len(behind)} partition(s) behind")
                for msg in batch:
                    error = msg.error()
                    if error is None:
                        handlers[msg.topic()](msg.partition(), msg.key(), msg.value())
                        applied += 1
                    elif error.code() == KafkaError._PARTITION_EOF:
                        tp = (msg.topic(), msg.partition())
                        at_stable_end[tp] = msg.offset()
                        positions[tp] = max(positions.get(tp, 0), msg.offset())
                    elif error.fatal() or error.code() not in _PASSING:
                        raise KafkaUnavailable(f"reading {msg.topic()}: {error.str()}")
                    else:
                        log.debug("changelog reader: %s", error.str())
                if batch:  # where the consumer is now, per partition (no per-message bookkeeping)
                    for tp in consumer.position([TopicPartition(*tp) for tp in behind]):
                        key = (tp.topic, tp.partition)
                        if tp.offset > positions.get(key, 0):
                            positions[key] = tp.offset
                            moved[key] = now
                behind = {tp for tp in behind if positions[tp] < ends[tp] and not (
                    at_stable_end.get(tp) == positions[tp]
                    and now - moved[tp] > self.OPEN_TRANSACTION_SECONDS)}
        except BaseException:
            # The consumer may be past records of its last batch that no handler saw: the
            # next call starts a new one at the positions every record before them was
            # handled at (records handled twice are harmless: a changelog record replaces
            # its key's value).
            self._drop_consumer()
            raise
        return applied

    def _connect(self) -> Consumer:
        """The consumer, with every partition of every source assigned (topics that do not
        exist yet, e.g. before the stream app first ran, are looked for again next time)."""
        if self._consumer is None:
            self._admin = admin(self.settings)
            self._consumer = create(Consumer, self.settings, **{
                "group.id": Topics(self.settings.namespace).reader_group,
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "enable.partition.eof": True, "isolation.level": "read_committed",
                "fetch.wait.max.ms": 50, "queued.max.messages.kbytes": 262144})
            if self.positions:  # replacing one that failed: on from where it was
                self._consumer.incremental_assign([
                    TopicPartition(t, p, offset or OFFSET_BEGINNING)
                    for (t, p), offset in self.positions.items()])
        if not self._complete:
            md = self._consumer.list_topics(timeout=self.REQUEST_TIMEOUT)
            new = []
            complete = True
            for topic in self.handlers:
                info = md.topics.get(topic)
                if info is None or info.error is not None or not info.partitions:
                    complete = False
                    continue
                for partition in info.partitions:
                    if (topic, partition) not in self.positions:
                        self.positions[(topic, partition)] = 0
                        new.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
            if new:
                self._consumer.incremental_assign(new)
            self._complete = complete
        return self._consumer

    def _drop_consumer(self) -> None:
        """Close the consumer, keeping the positions (the next call goes on from them)."""
        if self._consumer is not None:
            consumer, self._consumer, self._admin = self._consumer, None, None
            self._complete = False
            try:
                consumer.close()
            except KafkaException as exc:  # already failing: the first error is the one told
                log.debug("changelog reader: closing: %s", exc)

    def close(self) -> None:
        self._drop_consumer()
        self.positions.clear()
        self._at_stable_end.clear()
