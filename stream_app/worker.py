"""The stream worker: a batched confluent-kafka loop, RocksDB state, Kafka transactions.

    consume a batch ─► Processor (per message, into the partition's state overlay) ─► produce
         ▲             valid sales, dead letters and reroutes at once; at most every
         │             `commit_interval`: changelogs (each changed key once) + offsets
         └──────────── in ONE transaction ─► committed? then the stores (WriteBatch + checkpoint)

Kafka is the distributed engine: the group assigns the partitions (cooperative-sticky), the
changelog topics are the state's durable copy, and a transaction makes a batch's changelog
records, accepted sales, dead letters, rerouted sales and input offsets visible together or
not at all (read_committed readers). A `kill -9` at any moment therefore loses nothing and
counts nothing twice: the open transaction is aborted (at the latest by the next worker in
the same state slot, which uses the same `transactional.id`), the stores were not touched,
and the input is read again from the committed offsets. A worker that lost its partitions
without knowing is fenced: its offsets carry an old group generation, so its transaction
cannot commit (KIP-447).

Partitions arrive paused and are restored (`restore.py`) before their messages flow; a
revoked partition's batch is committed before it is released; a lost one is dropped with the
aborted transaction. The worker is an object made from `Settings`: `run()` blocks until
`stop()` (or SIGTERM via `salesflow stream`) and returns after committing what is in flight.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from salesflow import instrumentation
from salesflow.anomalies import AnomalyRules
from salesflow.codec import Codec, codec_for
from salesflow.dead_letters import DeadLetter
from salesflow.errors import ConfigError, KafkaUnavailable
from salesflow.kafka import (
    CONNECTION,
    check_reachable,
    client_config,
    ensure_topics,
    security_error,
    topic_id,
    topic_partitions,
)
from salesflow.notify import CrashLoopDetector, Notifier
from salesflow.settings import Settings
from salesflow.tables import COUNTS, SEEN, TABLES, pack_seen
from salesflow.topics import TOPIC_MAX_MESSAGE_BYTES, Topics
from stream_app import state_dir
from stream_app.dimensions import DimensionCache
from stream_app.processor import AggregateCache, Incoming, Output, PartitionState, Processor
from stream_app.restore import Restorer
from stream_app.store import PartitionStore

log = logging.getLogger("salesflow.stream")

TIMER_SECONDS = 1.0
REPORT_SECONDS = 10.0
EXIT_RECOVERY_TIMEOUT = 75
# A dead letter or a ValidSales record carries a whole input message (up to the sales topic's
# 1 MB) plus headers: the topics the worker writes take records up to this size.
MAX_RECORD_BYTES = TOPIC_MAX_MESSAGE_BYTES
EXIT_UNEXPECTED = 70
STUCK_GRACE_SECONDS = 5.0  # past a librdkafka call's own timeout: the call is stuck


class ProducerStuck(Exception):
    """A transactional call of the producer did not return within its timeout."""


def _chunks(entries: list, limit: int = 512 * 1024) -> Iterator[list]:
    """Entries in groups of about `limit` bytes of messages: one record each."""
    chunk: list = []
    size = 0
    for entry in entries:
        if chunk and size + len(entry[0]) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += len(entry[0])
    if chunk:
        yield chunk


class RecoveryTimeout(KafkaUnavailable):
    """A partition's state did not restore within `SALESFLOW_RECOVERY_TIMEOUT_SECONDS`."""


@dataclass
class Task:
    """One sales partition this worker holds."""

    partition: int
    store: PartitionStore
    cache: AggregateCache = field(default_factory=AggregateCache)
    anomalies: bool = True
    state: PartitionState | None = None  # None while restoring
    position: int = OFFSET_BEGINNING  # where to read again if the transaction aborts
    next_offset: int | None = None  # after what the open transaction applied

    @property
    def active(self) -> bool:
        return self.state is not None

    def fresh_state(self) -> PartitionState:
        return PartitionState(self.partition, self.store, self.cache, self.anomalies)


class Worker:
    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.namespace)
        self.codec = codec or codec_for(settings)
        self.dims = DimensionCache(settings, self.codec)
        self.tasks: dict[int, Task] = {}
        self.partitions = 0
        self.out = Output()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._in_txn = False
        self._txn_started = 0.0
        self._txn_messages = 0
        self._delivered: dict[tuple[str, int], int] = {}
        self._delivery_errors: list[str] = []
        self._denied: Exception | None = None  # an ACL refused a record: no retry helps
        self._slot: Path | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._restorer: Restorer | None = None
        self._processor: Processor | None = None
        self._totals: Counter[str] = Counter()  # since start, for the throughput line
        self._waited: Counter[str] = Counter()  # seconds waiting for the broker, by step
        self._reported: tuple[float, int] = (time.monotonic(), 0)

    # --- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in flight, commit it, leave the group (thread- and signal-safe)."""
        self._stopping.set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def run(self) -> None:
        """Run until `stop()`; raises on what the worker cannot survive."""
        self._start()
        try:
            self._loop()
            self._commit()
        except BaseException:
            self._abort_quietly()
            raise
        finally:
            self._shutdown()

    def _start(self) -> None:
        settings, topics = self.settings, self.topics
        with CONNECTION.starting():
            check_reachable(settings)
        ensure_topics(settings)
        self.partitions = topic_partitions(settings, topics.sales)
        changelogs = list(topics.changelogs.values())
        ensure_topics(settings, changelogs, partitions=self.partitions)
        for name in changelogs:
            found = topic_partitions(settings, name)
            if found != self.partitions:
                raise ConfigError(
                    f"{topics.sales} has {self.partitions} partitions but the stream state "
                    f"({name}) has {found}: the partition count of a namespace cannot change "
                    "in place; see README, 'Changing the partition count'")
        self._slot = state_dir.claim(settings.state_dir / topics.app_id)
        state_dir.bind(self._slot, topic_id(settings, topics.changelog(COUNTS)))
        starts = CrashLoopDetector(self._slot / "worker-starts")
        if starts.looping(count := starts.record_start()):
            Notifier.from_settings(settings).worker_crash_loop(count, starts.window)
        transactional_id = f"{topics.app_id}-{state_dir.process_id(self._slot)}"
        self._processor = Processor(
            self.codec, self.dims, self.partitions, settings.unknown_ref_retry_seconds,
            anomalies=AnomalyRules.from_settings(settings) if settings.anomalies else None)
        self.dims.start()
        self._producer = self._new_producer(transactional_id)
        self._restorer = Restorer(settings, self._wipe)
        self._consumer = Consumer(client_config(settings, **{
            "group.id": topics.app_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
            "heartbeat.interval.ms": max(100, int(settings.session_timeout_seconds * 1000 / 6)),
            "fetch.wait.max.ms": 100,
        }))
        self._consumer.subscribe([topics.sales], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        instrumentation.WORKER_UP.set(1)
        log.info("stream worker ready: group %s, %d partitions of %s, state in %s, "
                 "transactional id %s", topics.app_id, self.partitions, topics.sales,
                 self._slot, transactional_id)
        self._ready.set()

    def _new_producer(self, transactional_id: str) -> Producer:
        timeout_ms = int(self.settings.transaction_timeout_seconds * 1000)
        producer = Producer(client_config(self.settings, **{
            "transactional.id": transactional_id,
            "transaction.timeout.ms": timeout_ms,
            "message.timeout.ms": timeout_ms,
            "socket.timeout.ms": min(60000, timeout_ms),
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "message.max.bytes": MAX_RECORD_BYTES,
            "queue.buffering.max.kbytes": 1 << 20,
            "queue.buffering.max.messages": 1_000_000,
        }))
        try:
            producer.init_transactions(max(30.0, self.settings.transaction_timeout_seconds * 3))
        except KafkaException as exc:
            raise security_error(exc.args[0], self.settings, transactional_id=transactional_id,
                                 operation="WRITE") or exc from exc
        return producer

    def _shutdown(self) -> None:
        instrumentation.WORKER_UP.set(0)
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group: partitions move at once
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)
        for task in self.tasks.values():
            task.store.close()
        self.tasks.clear()
        if self._restorer is not None:
            self._restorer.close()
        if self._producer is not None:
            self._producer.flush(5)
        self.dims.stop()

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        consumer, settings = self._consumer, self.settings
        assert consumer is not None and self._restorer is not None
        interval = settings.commit_interval_seconds
        next_timer = time.monotonic() + TIMER_SECONDS
        while not self._stopping.is_set():
            if self.dims.failed is not None:
                raise KafkaUnavailable(f"the dimension reader stopped: {self.dims.failed}")
            if self._restorer.busy:
                for done in self._restorer.step(0.2):
                    self._activate(done.partition)
                late = self._restorer.overdue(settings.recovery_timeout_seconds)
                if late is not None:
                    raise RecoveryTimeout(
                        f"table recovery did not finish within "
                        f"{settings.recovery_timeout_seconds:.0f} s "
                        f"({late.remaining()} changelog records to go)")
            wait = interval - (time.monotonic() - self._txn_started) if self._in_txn else 0.5
            if self._restorer.busy:
                wait = 0.0
            polled = time.monotonic()
            messages = consumer.consume(settings.max_batch_messages,
                                        timeout=max(0.01, min(wait, 0.5)))
            self._waited["poll"] += time.monotonic() - polled
            if messages:
                self._process(messages)
            now = time.monotonic()
            if now >= next_timer:
                next_timer = now + TIMER_SECONDS
                self._timers()
            if self._in_txn and (now - self._txn_started >= interval or
                                 self._txn_messages >= settings.max_batch_messages * 4):
                self._commit(whole_batch=True)

    def _process(self, messages: list[Message]) -> None:
        """Apply a batch; a transaction that reaches the commit interval meanwhile is
        committed between two messages (a poll can return minutes of packed sales)."""
        processor, tasks, sales = self._processor, self.tasks, self.topics.sales
        interval = self.settings.commit_interval_seconds
        assert processor is not None
        for msg in messages:
            error = msg.error()
            if error is not None:
                denied = security_error(error, self.settings, topic=msg.topic() or sales,
                                        group=self.topics.app_id, operation="READ")
                if denied is not None:
                    raise denied
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consuming %s: %s", sales, error.str())
                continue
            task = tasks.get(msg.partition())
            if task is None or task.state is None:
                continue  # revoked, or fetched before its pause: read again once restored
            if not self._in_txn:
                self._begin()
            offset = msg.offset()
            processor.handle(Incoming(sales, task.partition, offset, msg.key(), msg.value(),
                                      msg.timestamp()[1]), task.state, self.out)
            task.next_offset = offset + 1
            self._txn_messages += 1
            if time.monotonic() - self._txn_started >= interval:
                self._send_output()
                self._commit()
        self._send_output()

    def _begin(self) -> None:
        assert self._producer is not None
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:  # a producer left unusable by an earlier failure
            log.warning("cannot begin a transaction (%s); starting a new producer",
                        exc.args[0].str() if exc.args else exc)
            self._replace_producer()
            assert self._producer is not None
            self._producer.begin_transaction()
        self._in_txn = True
        self._txn_started = time.monotonic()
        self._txn_messages = 0

    def _send_output(self) -> None:
        """Valid sales, dead letters and rerouted sales go out as they are made (the
        transaction hides them until it commits)."""
        out, producer, topics = self.out, self._producer, self.topics
        assert producer is not None
        for partition, entries in out.valid.items():
            for chunk in _chunks(entries):
                self._produce(topics.valid_sales, self.codec.encode_valid_sales(chunk), None,
                              partition)
        for dead in out.dead:
            self._produce(topics.dlq, dead.value, dead.key, dead.partition, dead.headers())
        for partition, key, value in out.reroute:
            self._produce(topics.sales, value, key, partition)
        out.valid.clear()
        out.dead.clear()
        out.reroute.clear()
        producer.poll(0)

    def _produce(self, topic: str, value: bytes | None, key: bytes | None,
                 partition: int | None, headers: list[tuple[str, bytes]] | None = None,
                 track: bool = False) -> None:
        """Queue a record of the open transaction. A record that is not delivered makes the
        transaction fail to commit, so no record needs a callback of its own but the last
        changelog record of each partition (`track`), whose offset is the checkpoint."""
        producer = self._producer
        assert producer is not None
        kwargs: dict = {} if partition is None else {"partition": partition}
        if track:
            kwargs["on_delivery"] = self._track
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, **kwargs)
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not (isinstance(error, KafkaError) and (
                        error.code() == KafkaError._STATE or error.fatal()
                        or error.txn_requires_abort())):
                    raise
                # The transaction failed meanwhile (e.g. timed out): like a record not
                # delivered, the commit fails, aborts and reads it all again.
                self._delivery_errors.append(error.str())
                return

    def _check(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err.str())
            self._denied = self._denied or security_error(err, self.settings, topic=msg.topic(),
                                                          operation="WRITE")

    def _track(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._check(err, msg)
            return
        place = (msg.topic(), msg.partition())
        self._delivered[place] = max(msg.offset(), self._delivered.get(place, -1))

    # --- commit and abort -----------------------------------------------------------------------

    def _commit(self, whole_batch: bool = False) -> None:
        """Changelogs and offsets into the open transaction; commit it; then the stores.

        With `whole_batch` (every message the consumer returned is applied), a partition's
        offset is the consumer's position, which also steps over transaction markers (the
        worker's own rerouted sales leave them in the sales topic): a group that committed
        everything then has no lag left."""
        if not self._in_txn:
            return
        if whole_batch:
            self._advance_to_positions()
        producer, consumer, topics = self._producer, self._consumer, self.topics
        assert producer is not None and consumer is not None
        written: dict[int, tuple[dict, list]] = {}
        for task in self.tasks.values():
            state = task.state
            if state is None or not state.dirty:
                continue
            changes = state.changes()
            for table, entries in changes.items():
                topic, last = topics.changelog(table), len(entries) - 1
                for i, (key, value) in enumerate(entries.items()):
                    self._produce(topic, value, key, task.partition, track=i == last)
            seen = list(state.seen_new.items())
            packs = list(pack_seen(seen))
            for i, packed in enumerate(packs):
                self._produce(topics.changelog(SEEN), packed, None, task.partition,
                              track=i == len(packs) - 1)
            written[task.partition] = (changes, seen)
        # Every transaction commits offsets, even one that only took up parked sales: their
        # group generation is what fences a worker that lost its partitions unawares.
        offsets = [TopicPartition(topics.sales, t.partition, at) for t in self.tasks.values()
                   if t.active and (at := t.next_offset if t.next_offset is not None
                                    else t.position) >= 0]
        timeout = max(30.0, self.settings.transaction_timeout_seconds * 3)
        waited = time.monotonic()
        try:
            if producer.flush(timeout) or self._delivery_errors:
                if self._denied is not None:
                    raise self._denied
                raise KafkaUnavailable("records of the transaction were not delivered: "
                                       f"{(self._delivery_errors or ['timed out'])[0]}")
            if offsets:
                self._send_offsets(offsets, consumer.consumer_group_metadata(), timeout)
            producer.commit_transaction(timeout)
        except ProducerStuck as exc:
            log.warning("transaction not committed (%s); starting a new producer and reading "
                        "its messages again", exc)
            instrumentation.RETRIES.labels(dependency="kafka").inc()
            self._replace_producer()
            self._rewind()
            return
        except (KafkaException, KafkaUnavailable) as exc:
            self._failed_commit(exc)
            return
        finally:
            self._waited["commit"] += time.monotonic() - waited
        self._in_txn = False
        for task in self.tasks.values():
            if task.partition in written:
                changes, seen = written[task.partition]
                checkpoint = {table: self._delivered[(topics.changelog(table), task.partition)]
                              for table in TABLES
                              if (topics.changelog(table), task.partition) in self._delivered}
                task.store.write(changes, seen, checkpoint)
                task.state.committed()
                self.out.stats.update(task.state.counts.minus(task.state.counts_before))
                task.state = task.fresh_state()
            if task.next_offset is not None:
                task.position, task.next_offset = task.next_offset, None
        self._delivered.clear()
        instrumentation.observe(self.out.stats, time.monotonic() - self._txn_started)
        self._totals.update(self.out.stats)
        self.out.stats.clear()
        self._update_waiting()

    def _send_offsets(self, offsets: list[TopicPartition], group: object,
                      timeout: float) -> None:
        """`send_offsets_to_transaction`, in a thread of its own: librdkafka's call can block
        far past its timeout while its cached group coordinator is down (librdkafka#5456,
        seen here after a broker restart). A call still blocked `STUCK_GRACE_SECONDS` after
        its timeout is `ProducerStuck`: the producer is left to that thread (whose frame keeps
        it referenced, so it is never destroyed under the call), and the new producer's
        `init_transactions` fences it and aborts its transaction."""
        producer = self._producer
        failed: list[BaseException] = []

        def call() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, group, timeout)
            except BaseException as exc:  # handed to the worker's thread
                failed.append(exc)

        thread = threading.Thread(target=call, name="send-offsets", daemon=True)
        thread.start()
        thread.join(timeout + STUCK_GRACE_SECONDS)
        if thread.is_alive():
            raise ProducerStuck(f"send_offsets_to_transaction still blocked after "
                                f"{timeout + STUCK_GRACE_SECONDS:.0f} s")
        if failed:
            raise failed[0]

    def _advance_to_positions(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        active = [t for t in self.tasks.values() if t.active]
        if not active:
            return
        positions = consumer.position([TopicPartition(self.topics.sales, t.partition)
                                       for t in active])
        for task, tp in zip(active, positions, strict=True):
            done = task.next_offset if task.next_offset is not None else task.position
            if tp.offset > done >= 0:
                task.next_offset = tp.offset

    def _failed_commit(self, exc: Exception) -> None:
        """Abort and read the batch again; a refusal by an ACL ends the worker (one line)."""
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
        if isinstance(error, KafkaError) and (denied := security_error(
                error, self.settings, operation="WRITE", what="committing a transaction")):
            self._abort()
            raise denied
        log.warning("transaction not committed (%s); reading its messages again",
                    error.str() if isinstance(error, KafkaError) else error)
        instrumentation.RETRIES.labels(dependency="kafka").inc()
        self._abort()

    def _abort(self) -> None:
        """Drop the open transaction and every partition's uncommitted state, and rewind.

        A producer that cannot abort (fatal error, or the broker gone past the transaction
        timeout) is replaced by a new one with the same transactional id, which aborts the
        old transaction for it when the broker is back.
        """
        producer = self._producer
        assert producer is not None
        if self._in_txn:
            try:
                producer.abort_transaction(self.settings.transaction_timeout_seconds * 3)
            except KafkaException as exc:
                log.warning("the transaction could not be aborted (%s); starting a new "
                            "producer", exc.args[0].str() if exc.args else exc)
                self._replace_producer()
        self._rewind()

    def _replace_producer(self) -> None:
        """A new transactional producer in place of one that cannot go on. Its start fences
        the old one; while the broker is away, this waits for it (as no work can be done)."""
        assert self._slot is not None
        self._producer = None  # the old one is dropped unflushed: its transaction is void
        transactional_id = f"{self.topics.app_id}-{state_dir.process_id(self._slot)}"
        delay = 1.0
        while self._producer is None:
            try:
                self._producer = self._new_producer(transactional_id)
            except KafkaException as exc:
                if self._stopping.is_set():
                    raise
                log.warning("no transactional producer yet (%s); retrying in %.0fs",
                            exc.args[0].str() if exc.args else exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._in_txn = False

    def _rewind(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._in_txn = False
        self._delivered.clear()
        self._delivery_errors.clear()
        self.out.clear()
        for task in self.tasks.values():
            if task.state is None:
                continue
            task.state = task.fresh_state()
            if task.next_offset is not None:
                consumer.seek(TopicPartition(self.topics.sales, task.partition, task.position))
                task.next_offset = None

    def _abort_quietly(self) -> None:
        if self._in_txn and self._producer is not None:
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(5)
            self._in_txn = False

    # --- partitions come and go -----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._restorer is not None and self._slot is not None
        mine = [tp for tp in partitions if tp.topic == self.topics.sales]
        for tp in mine:
            if tp.partition >= self.partitions:
                self._stopping.set()
                log.error("%s now has more than %d partitions: the partition count of a "
                          "namespace cannot change in place; see README, 'Changing the "
                          "partition count'", self.topics.sales, self.partitions)
        consumer.incremental_assign(partitions)
        consumer.pause(mine)
        stores = {tp.partition: PartitionStore(self._slot / f"p{tp.partition}") for tp in mine}
        for partition, store in self._restorer.add(stores).items():
            self.tasks[partition] = Task(partition, store, anomalies=self.settings.anomalies)
        if mine:
            log.info("assigned partitions %s; restoring their state",
                     sorted(tp.partition for tp in mine))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topics.sales]
        try:
            self._commit()  # the batch in flight, revoked partitions included
        except Exception as exc:  # the next owner reads from the committed offsets
            log.warning("commit on revocation failed: %s", exc)
            self._abort_quietly()
            self._rewind()
        self._drop(mine)
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topics.sales]
        log.warning("partitions %s were lost (session timed out?); dropping the open "
                    "transaction", sorted(tp.partition for tp in mine))
        self._drop(mine, abort=True)
        consumer.incremental_unassign(partitions)

    def _drop(self, partitions: list[TopicPartition], abort: bool = False) -> None:
        assert self._restorer is not None
        lost = [self.tasks.pop(tp.partition) for tp in partitions if tp.partition in self.tasks]
        if abort:
            self._abort_quietly()
            self._rewind()
        for task in lost:
            self._restorer.remove(task.partition)
            task.store.close()
            instrumentation.CONSUMER_LAG.remove(self.topics.sales, str(task.partition))
        if lost:
            log.info("released partitions %s", sorted(t.partition for t in lost))

    def _activate(self, partition: int) -> None:
        """A restored partition starts where its state ends."""
        consumer = self._consumer
        task = self.tasks.get(partition)
        assert consumer is not None
        if task is None:
            return
        task.state = task.fresh_state()
        last = task.state.counts.last_offset
        task.position = OFFSET_BEGINNING if last is None else last + 1
        task.next_offset = None
        tp = TopicPartition(self.topics.sales, partition, task.position)
        consumer.seek(tp)
        consumer.resume([tp])
        self._update_waiting()

    def _wipe(self, partition: int, store: PartitionStore) -> PartitionStore:
        """An empty store in place of `store` (which the restorer cannot trust)."""
        store.close()
        PartitionStore.wipe(store.path)
        return PartitionStore(store.path)

    # --- timers ---------------------------------------------------------------------------------

    def _timers(self) -> None:
        processor = self._processor
        assert processor is not None
        for task in self.tasks.values():
            state = task.state
            if state is None:
                continue
            if state.counts.waiting > 0:
                if not self._in_txn:
                    self._begin()
                processor.revisit_parked(state, self.out, self.topics.sales)
            self._dead_letter_dimensions(task)
        if self.out.valid or self.out.dead:
            self._send_output()
        self._report_lag()
        self._report_throughput()

    def _dead_letter_dimensions(self, task: Task) -> None:
        """Unreadable records of dimension partitions p (mod the sales partitions) are
        dead-lettered by the owner of sales partition p, once: how far it looked is state."""
        state = task.state
        assert state is not None
        bad, upto = self.dims.bad_records(task.partition, self.partitions,
                                          state.dimension_offsets)
        if not bad:
            state.dimension_offsets.update(upto)  # persisted with the next change, if any
            return
        if not self._in_txn:
            self._begin()
        state.looked_at_dimensions(upto)
        for record in bad:
            self.out.dead.append(DeadLetter(
                value=record.value, key=record.key, reason=record.rejection.reason,
                message=record.rejection.message, source=record.topic,
                partition=record.partition, offset=record.offset))
            self.out.stats[f"dimension_dead_lettered:{record.rejection.reason.value}"] += 1

    def _update_waiting(self) -> None:
        instrumentation.PENDING.set(sum(t.state.counts.waiting for t in self.tasks.values()
                                        if t.state is not None))

    def _report_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for task in self.tasks.values():
            if task.state is None or task.next_offset is None:
                continue
            tp = TopicPartition(self.topics.sales, task.partition)
            try:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                instrumentation.CONSUMER_LAG.labels(self.topics.sales, str(task.partition)).set(
                    max(0, high - task.next_offset))

    def _report_throughput(self) -> None:
        now = time.monotonic()
        since, before = self._reported
        if now - since < REPORT_SECONDS:
            return
        total = self._totals["in"] + self._totals["rerouted"]
        self._reported = (now, total)
        if total == before and not self._restorer.busy:  # type: ignore[union-attr]
            return
        dead = sum(v for k, v in self._totals.items() if k.startswith("dead_lettered:"))
        waited = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in self._waited.items())
        self._waited.clear()
        log.info("%.0f sales/s over %.0fs (waiting for Kafka: %s); since start: %d in, "
                 "%d accepted, %d replays, %d dead-lettered, %d rerouted; partitions %s",
                 (total - before) / (now - since), now - since, waited or "none",
                 self._totals["in"], self._totals["accepted"], self._totals["replays"], dead,
                 self._totals["rerouted"], sorted(p for p, t in self.tasks.items() if t.active))
