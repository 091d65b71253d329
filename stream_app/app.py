"""The one Faust application: its topics, tables and agents.

Topology (see README, "Stream topology"):
- `<ns>.sales` (N partitions, a sale on `crc32(sale_id) % N`) → agent `process_sales`.
  No repartition: every table key starts with the source partition, so all state a message
  touches lives in that partition's changelog, in the order of that partition's offsets.
- tables (changelog-backed, partition-local): `seen` (accepted sale ids and their content
  digest), `customers` (customer-month aggregates), `team` (store-salesperson-month
  aggregates), `parked` (sales waiting for a dimension), `counts` (records in / accepted /
  replays / dead-lettered per partition, exactly once).
- the four dimensions: every worker follows all partitions of the compacted `<ns>.dim.*`
  topics (`stream_app.dimensions`), so referential checks never leave the process.
- out: `<ns>.sales.valid` (accepted sales keyed by sale_id, compacted; same partition as
  the source), `<ns>.sales.dlq`, and re-published parked sales back to `<ns>.sales`.
Every record the agent writes goes through `stream_app.sink` (librdkafka, in bulk), and the
agent waits for a message's writes to be acknowledged before it takes the next one.
Offsets of `<ns>.sales` are committed by this module, not by Faust's acks: only offsets whose
every write is acknowledged, only for partitions the worker holds now. Together with the
watermarks in `stream_app.state` that makes a `kill -9` at any moment lose nothing and count
nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Any

import faust
from faust.stores.memory import Store as MemoryStore
from faust.types import TP

from mart_builder.commands import PeriodicFlusher
from salesflow import instrumentation
from salesflow.codec import codec_for
from salesflow.kafka import read_range
from salesflow.notify import BurstDetector
from salesflow.settings import get_settings
from salesflow.topics import Topics
from stream_app import state_dir
from stream_app.dimensions import DimensionCache
from stream_app.processor import RETRY_HEADER, TICK, Incoming, Processor, Tables
from stream_app.sink import Batch, Sink

log = logging.getLogger("salesflow.stream")
settings = get_settings()
topics = Topics(settings.namespace)

app = faust.App(
    topics.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    datadir=str(state_dir.claim(settings.state_dir / topics.app_id)),
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    topic_allow_declare=True,
    web_enabled=False,
    # Fast fail-over for a killed worker (Faust's defaults wait a minute).
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    broker_rebalance_timeout=20.0,
    broker_request_timeout=30.0,
    # The agent writes through `stream_app.sink`, not Faust's producer, and `commit_processed`
    # commits the sales offsets.
    table_standby_replicas=0,  # the memory store re-reads a changelog anyway on promotion
    consumer_auto_offset_reset="earliest",
)

RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                       "value_serializer": "raw"}
# acks=False: Faust neither tracks nor commits this topic's offsets (`commit_processed` does).
sales_topic = app.topic(topics.sales, partitions=settings.partitions, acks=False, **RAW)


# value_type None (not `Any`): Faust then returns the decoded JSON as is; with `Any` it calls
# `Any.from_data` on every changelog record it restores, so a restarted worker never recovers.
JSON = faust.Schema(key_type=str, value_type=None, key_serializer="json",
                   value_serializer="json")


def _table(name: str, **kwargs: Any) -> faust.Table:
    return app.Table(name, default=None, partitions=settings.partitions, schema=JSON, **kwargs)


# `seen` holds an entry per accepted sale, so it lives on disk (RocksDB, small caches): a
# worker's memory then grows with the aggregates' keys, not with the number of sales.
seen = _table("seen", store="rocksdb:seen", options={  # files: <datadir>/v1/tables/seen-N.db
    "driver": "rocksdict", "write_buffer_size": 4 << 20, "max_write_buffer_number": 2,
    "target_file_size_base": 16 << 20, "block_cache_size": 8 << 20})
customers = _table("customers")
team = _table("team")
parked = _table("parked")
counts = _table("counts")

sink = Sink(settings)
codec = codec_for(settings)
dimensions = DimensionCache(settings, codec)
processor = Processor(codec, dimensions, settings.unknown_ref_retry_seconds)


class FaustTables(Tables):
    """Each changed key goes into the Faust table's local store and, through the message's
    batch, to its changelog partition; the agent takes the next message only once the batch
    is acknowledged, so an offset is only committed once everything it caused is in Kafka."""

    def __init__(self, partition: int) -> None:
        super().__init__(*(_storage(t) for t in (seen, customers, team, parked, counts)))
        self.partition = partition

    def commit(self, batch: Batch) -> None:  # type: ignore[override]
        for name, dirty in self._dirty.items():
            store, changelog = self.stores[name], changelogs[name]
            for key, value in dirty.items():
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
                batch.send(changelog, None if value is None else _json(value),
                           key=_json(key), partition=self.partition)
            dirty.clear()


def _persisted(batch: Batch, partition: int) -> None:
    """Tell the on-disk `seen` store how far its changelog is acknowledged (Faust does this
    for its own sends): a restarted worker then recovers only the records after it."""
    topic = changelogs["seen"]
    offset = batch.last_offsets.get((topic, partition))
    if offset is not None:
        seen.data.set_persisted_offset(TP(topic, partition), offset)


def _storage(table: faust.Table) -> Any:
    """The table's local storage, below Faust's per-access bookkeeping (a measured 10 % of a
    worker's time): the dict of a memory store, the store itself for RocksDB."""
    store = table.data
    return store.data if isinstance(store, MemoryStore) else store


changelogs = {name: topics.changelog(name) for name in ("seen", "customers", "team", "parked",
                                                         "counts")}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@app.agent(sales_topic)
async def process_sales(stream: faust.StreamT) -> None:
    async for event in stream.events():
        try:
            msg = event.message
            generation = assignment.generation
            await _fill_gap(msg.tp, msg.offset)
            if generation != assignment.generation:
                continue  # revoked while the gap was read: its next owner processes it
            await _process(Incoming(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                    dict(msg.headers or ())), msg.timestamp)
        except Exception:
            # An exception here would still ack the message and let Faust commit past it;
            # dying without a commit makes Kafka redeliver it to the next worker instead.
            log.exception("unexpected error; exiting without committing")
            os._exit(70)


async def _fill_gap(tp: Any, offset: int) -> None:
    """First process, in order, the messages of `tp` before `offset` that the state
    has not applied yet.

    After a rebalance in which a worker keeps a partition, Faust 0.15 can drop the messages
    it had prefetched for it and go on with later ones (faust-streaming #216, #221), and may
    even commit past the dropped ones. Applied out of order, their sales would fall under the
    watermarks; never applied, they would be lost. `counts` holds the last offset applied per
    partition (every message goes through it), so a jump shows here, and the missing
    messages are read straight from Kafka. (Offsets are committed from what was processed, so
    a skipped message is never committed past.)
    """
    partition = tp.partition
    counted = counts.get(str(partition))
    expected = counted["offset"] + 1 if counted else 0
    if offset <= expected:
        return
    log.warning("partition %d: offsets %d..%d were skipped by the consumer; reading them "
                "directly", partition, expected, offset - 1)
    generation = assignment.generation
    missed = await asyncio.get_running_loop().run_in_executor(
        None, _read_range, partition, expected, offset)
    for incoming in missed:
        if generation != assignment.generation:
            return
        await _process(incoming, None)


@app.timer(5.0)
async def expose_skipped() -> None:
    """When Faust skipped the last messages of a partition, no later message shows the gap:
    if the state has not moved for a while although the partition holds more, send a tick
    (harmless if Faust was merely slow); the agent then sees the gap and fills it."""
    if app.rebalancing:
        return
    for tp in _assigned_sales():
        counted = counts.get(str(tp.partition))
        applied = counted["offset"] if counted else -1
        high = _highwater(tp)
        stalled = stalled_at.get(tp.partition) == applied
        stalled_at[tp.partition] = applied
        if high is not None and high > applied + 1 and stalled:
            log.warning("partition %d: the state stays at offset %d below the end %d; ticking",
                        tp.partition, applied, high)
            await _tick(tp.partition)


stalled_at: dict[int, int] = {}  # partition -> the state's offset at the last look


async def _tick(partition: int) -> None:
    batch = sink.batch()
    batch.send(topics.sales, TICK, partition=partition)
    await batch.done()


def _read_range(partition: int, start: int, end: int) -> list[Incoming]:
    """Messages [start, end) of one partition of the sales topic, read without a group."""
    return [Incoming(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                     dict(msg.headers() or ()))
            for msg in read_range(settings, topics.sales, partition, start, end, 60)]


async def _process(msg: Incoming, timestamp: float | None) -> None:
    started = time.perf_counter()
    generation = assignment.generation
    tables = FaustTables(msg.partition)
    fx = processor.handle(msg, tables)
    batch = sink.batch()
    tables.commit(batch)
    for sale_id, value in fx.valid:
        batch.send(topics.valid_sales, value, key=sale_id.encode(), partition=msg.partition)
    for dead in fx.dead:
        batch.send(topics.dlq, dead.value, key=dead.key, headers=dead.headers(),
                   partition=msg.partition)
    for key, value, first_seen in fx.republish:
        batch.send(topics.sales, value, key=key, partition=msg.partition,
                   headers=[(RETRY_HEADER, repr(first_seen).encode())])
    await batch.done()
    if generation == assignment.generation:  # else the partition may have moved meanwhile
        processed[msg.partition] = msg.offset
        _persisted(batch, msg.partition)
    instrumentation.observe(fx.counts, time.perf_counter() - started)
    if fx.dead and dead_letter_burst.add(len(fx.dead)):  # posting may take seconds: a thread
        asyncio.get_running_loop().run_in_executor(
            None, notifier.dead_letter_spike, dead_letter_burst.count(),
            dead_letter_burst.window)
    if fx.counts["accepted"] and timestamp:
        instrumentation.EVENT_TO_PROCESSED.observe(max(0.0, time.time() - timestamp))


class Assignment:
    """Bumped at every rebalance: `processed` only speaks for the current assignment."""

    generation = 0


assignment = Assignment()
processed: dict[int, int] = {}  # partition -> last offset whose every write is acknowledged
committed: dict[int, int] = {}  # partition -> offset this worker last committed


def _assigned_sales() -> list[Any]:
    return [tp for tp in app.assignor.assigned_actives() if tp.topic == topics.sales]


def _highwater(tp: Any) -> int | None:
    """The end offset of `tp` as the consumer last saw it; None if it was just revoked
    (aiokafka asserts then, and an exception in a timer would crash the worker)."""
    try:
        return app.consumer.highwater(tp)
    except AssertionError:
        return None


async def _commit(tps: list[Any]) -> None:
    """Commit, for `tps`, the offset after the last message whose writes are all in Kafka."""
    offsets = {tp: processed[tp.partition] + 1 for tp in tps
               if tp.partition in processed
               and processed[tp.partition] + 1 > committed.get(tp.partition, -1)}
    if offsets and await app.consumer._commit(offsets):
        committed.update({tp.partition: offset for tp, offset in offsets.items()})


@app.timer(1.0)
async def commit_processed() -> None:
    if not app.rebalancing:
        await _commit(_assigned_sales())


@app.on_partitions_revoked.connect
async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
    """Commit what was done for the partitions about to move, then forget them: the next
    owner starts from there (or earlier, and the watermarks skip what is in)."""
    assignment.generation += 1
    mine = [tp for tp in revoked if tp.topic == topics.sales]
    try:
        await _commit(mine)
    except Exception as exc:  # the next owner re-reads a little more; nothing is lost
        log.warning("commit on revocation failed: %r", exc)
    for tp in mine:
        processed.pop(tp.partition, None)
        committed.pop(tp.partition, None)
        stalled_at.pop(tp.partition, None)


@app.timer(5.0)
async def report_lag() -> None:
    """Consumer lag per partition of the sales topic that this worker owns now."""
    mine = set(_assigned_sales())
    for partition in set(lag_reported) - {tp.partition for tp in mine}:
        instrumentation.CONSUMER_LAG.remove(topics.sales, str(partition))  # moved away
        lag_reported.discard(partition)
    for tp in mine:
        high = _highwater(tp)
        if high is not None:
            lag = max(0, high - processed.get(tp.partition, -1) - 1)
            instrumentation.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
            lag_reported.add(tp.partition)


lag_reported: set[int] = set()


@app.timer(1.0)
async def wake_parked() -> None:
    """Send a tick to each partition of ours that has parked sales, so they are looked at
    even when no other sale arrives there."""
    waiting = {int(key.split(":", 1)[0]) for key, entry in list(parked.items())
               if entry and not entry["done"]}  # done entries need no tick
    mine = {tp.partition for tp in _assigned_sales()}
    for partition in sorted(waiting & mine):
        await _tick(partition)


flusher = PeriodicFlusher(settings)
notifier = flusher.notifier
dead_letter_burst = BurstDetector(threshold=1000, window_seconds=60.0)


@app.timer(settings.flush_interval_seconds, on_leader=True)
async def flush_marts() -> None:
    """The mart builder runs on the leader only, in a thread, so the stream never waits."""
    await asyncio.get_running_loop().run_in_executor(None, flusher.run_once)


def watch_recovery() -> None:
    """Table recovery (after a start or a rebalance) is bounded: a worker still recovering
    after SALESFLOW_RECOVERY_TIMEOUT_SECONDS exits, and its supervisor restarts it; nothing
    is committed while it recovers, so nothing is lost. (Faust logs the progress every 5 s.)
    A thread, because Faust runs no timer of the app until its first recovery is done."""
    recovery, limit = app.tables.recovery, settings.recovery_timeout_seconds

    def watch() -> None:
        while True:
            time.sleep(min(5.0, limit / 2))
            started = recovery._recovery_started_at  # time.monotonic() at its start
            if recovery.in_recovery and started is not None and \
                    time.monotonic() - started > limit:
                log.error("table recovery did not finish within %.0f s (%d changelog records "
                          "to go); exiting", limit, recovery.active_remaining_total())
                os._exit(75)

    threading.Thread(target=watch, name="recovery-watch", daemon=True).start()


@app.task
async def announce() -> None:
    log.info("stream worker started: app %s, topics %s, %s", topics.app_id, topics.sales,
             ", ".join(topics.dims.values()))
