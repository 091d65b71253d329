"""Bringing partition stores up to their changelogs, between polls of the main consumer.

A partition the worker is given starts paused; the restorer reads each of its tables'
changelog from the store's checkpoint to the end (read_committed: only committed
transactions) in large batches straight into RocksDB, then the worker resumes it. The main
consumer keeps polling meanwhile, so a long restore never costs the worker its group
membership, and the partitions it already holds keep flowing. A store whose checkpoint the
changelog cannot have written (a checkpoint at or past its end, or older than the changelog
keeps tombstones) is wiped and restored from the beginning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from salesflow.kafka import client_config, end_offsets, security_error
from salesflow.settings import Settings
from salesflow.tables import TABLES, TOMBSTONE_RETENTION_SECONDS
from salesflow.topics import Topics
from stream_app.store import PartitionStore

log = logging.getLogger("salesflow.stream.restore")
BATCH = 20_000


@dataclass
class Restoring:
    partition: int
    store: PartitionStore
    started: float = field(default_factory=time.monotonic)
    ends: dict[str, int] = field(default_factory=dict)  # changelog -> end offset at the start
    positions: dict[str, int] = field(default_factory=dict)  # changelog -> next offset
    open: set[str] = field(default_factory=set)  # changelogs not at their end yet
    records: int = 0

    def remaining(self) -> int:
        return sum(max(0, self.ends[t] - self.positions.get(t, 0)) for t in self.open)


class Restorer:
    """Restores the stores of newly assigned partitions, a slice of work at a time."""

    def __init__(self, settings: Settings,
                 wipe: Callable[[int, PartitionStore], PartitionStore]) -> None:
        self._settings = settings
        self._topics = Topics(settings.namespace)
        self._changelogs = {self._topics.changelog(t): t for t in TABLES}
        self._wipe = wipe  # (partition, store) -> a new, empty store in place of the old one
        self._consumer = Consumer(client_config(settings, **{
            "group.id": f"{self._topics.app_id}-restore", "enable.auto.commit": False,
            "enable.partition.eof": True, "isolation.level": "read_committed",
            "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20}))
        self.pending: dict[int, Restoring] = {}
        self._last_log = 0.0

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def add(self, stores: dict[int, PartitionStore]) -> dict[int, PartitionStore]:
        """Start restoring the stores of newly assigned partitions; returns the store to use
        per partition (a fresh one where the old one was wiped)."""
        places = [(t, p) for p in stores for t in self._changelogs]
        lows = end_offsets(self._settings, places, earliest=True)
        highs = end_offsets(self._settings, places)
        assign = []
        for partition, store in stores.items():
            task = self._plan(partition, store, lows, highs)
            if task is None:
                task = self._plan(partition, self._wipe(partition, store), lows, highs)
                assert task is not None
            self.pending[partition] = task
            assign += [TopicPartition(t, partition, task.positions[t]) for t in task.open]
        if assign:
            self._consumer.incremental_assign(assign)
        return {p: task.store for p, task in self.pending.items() if p in stores}

    def _plan(self, partition: int, store: PartitionStore, lows: dict[tuple[str, int], int],
              highs: dict[tuple[str, int], int]) -> Restoring | None:
        """Where to start reading each changelog; None if the store cannot be trusted."""
        task = Restoring(partition, store)
        checkpoint = store.checkpoint()
        age = time.time() - store.written_at()
        if checkpoint and age > TOMBSTONE_RETENTION_SECONDS / 2:
            log.warning("partition %d: the store was last written %.0f days ago, longer than "
                        "the changelogs are sure to keep deletions; restoring it afresh",
                        partition, age / 86400)
            return None
        for topic, table in self._changelogs.items():
            low, high = lows[(topic, partition)], highs[(topic, partition)]
            done = checkpoint.get(table)
            if done is not None and done >= high:
                log.warning("partition %d: the %s store is ahead of its changelog (%d >= %d); "
                            "restoring it afresh", partition, table, done, high)
                return None
            start = low if done is None else max(done + 1, low)
            if start < high:
                task.ends[topic], task.positions[topic] = high, start
                task.open.add(topic)
        return task

    def remove(self, partition: int) -> None:
        task = self.pending.pop(partition, None)
        if task is not None and task.open:
            self._consumer.incremental_unassign(
                [TopicPartition(t, partition) for t in task.open])

    def step(self, budget: float) -> list[Restoring]:
        """Restore for about `budget` seconds; returns the partitions that are done."""
        deadline = time.monotonic() + budget
        done = [t for t in self.pending.values() if not t.open]
        while self.pending and len(done) < len(self.pending) and time.monotonic() < deadline:
            batches: dict[tuple[str, int], list] = {}
            ends: list[tuple[str, int]] = []
            for msg in self._consumer.consume(BATCH, timeout=0.1):
                error = msg.error()
                place = (msg.topic(), msg.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.append(place)
                    elif denied := security_error(error, self._settings, topic=msg.topic(),
                                                  group=f"{self._topics.app_id}-restore",
                                                  operation={"topic": "READ",
                                                             "group": "DESCRIBE"}):
                        raise denied
                    else:
                        log.warning("restoring %s[%d]: %s", *place, error.str())
                    continue
                batches.setdefault(place, []).append(msg)
            for (topic, partition), msgs in batches.items():
                task = self.pending.get(partition)
                if task is None:
                    continue
                task.records += task.store.restore(
                    self._changelogs[topic], ((m.key(), m.value()) for m in msgs),
                    msgs[-1].offset())
                task.positions[topic] = msgs[-1].offset() + 1
            for topic, partition in ends:
                task = self.pending.get(partition)
                if task is not None and topic in task.open:
                    task.open.discard(topic)
                    self._consumer.incremental_unassign([TopicPartition(topic, partition)])
            done = [t for t in self.pending.values() if not t.open]
        self._report()
        for task in done:
            del self.pending[task.partition]
            log.info("partition %d restored: %d changelog entries in %.1fs", task.partition,
                     task.records, time.monotonic() - task.started)
        return done

    def overdue(self, limit: float) -> Restoring | None:
        """A restore running longer than `limit` seconds, if any."""
        now = time.monotonic()
        return next((t for t in self.pending.values() if now - t.started > limit), None)

    def _report(self) -> None:
        now = time.monotonic()
        if self.pending and now - self._last_log >= 5.0:
            self._last_log = now
            for task in self.pending.values():
                log.info("partition %d restoring: %d entries so far, %d changelog records to go",
                         task.partition, task.records, task.remaining())

    def close(self) -> None:
        self._consumer.close()

