"""Kafka client factories and topic creation, built from `Settings` only.

Partitioning contract of `<ns>.sales`: a sale lives on partition `crc32(sale_id) % partitions`.
That is librdkafka's default partitioner (`consistent_random`) for a keyed message, so any
confluent-kafka/librdkafka client that sends single sales keyed by `sale_id` agrees with our
own producer, which packs sales of one partition into one message. Because every copy of a
`sale_id` meets on one partition, the stream app detects replays and conflicts locally.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable, Iterator

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from salesflow.errors import KafkaUnavailable
from salesflow.settings import Settings
from salesflow.topics import Topics


def partition_for(sale_id: str, partitions: int) -> int:
    """The partition of a sale: librdkafka's consistent partitioner over the `sale_id` key."""
    return zlib.crc32(sale_id.encode("utf-8")) % partitions


LIBRDKAFKA_LOG = logging.getLogger("salesflow.librdkafka")


def client_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Config of every confluent-kafka client: librdkafka logs go to Python logging
    (`salesflow.librdkafka`), not straight to stderr, so a CLI error stays one line."""
    return {**settings.kafka_client_config(), "logger": LIBRDKAFKA_LOG, **extra}


def admin(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def check_reachable(settings: Settings, timeout: float = 10.0) -> None:
    """Fail fast with one clear line when no broker answers (instead of hanging)."""
    try:
        admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"no Kafka broker answered at {settings.kafka_bootstrap} within {timeout:.0f}s "
            "(start one with `salesflow stack up`)"
        ) from exc


def ensure_topics(settings: Settings, names: Iterable[str] | None = None,
                  timeout: float = 30.0, partitions: int | None = None) -> None:
    """Create the project's topics if missing, each with its configuration (`Topics.config`)
    and `partitions` partitions (default: the setting)."""
    topics = Topics(settings.namespace)
    wanted = list(names) if names is not None else [
        topics.sales, topics.dlq, topics.valid_sales, *topics.dims.values()]
    client = admin(settings)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap}") from exc
    new = [
        NewTopic(
            name,
            num_partitions=partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            config=topics.config(name),
        )
        for name in wanted
        if name not in existing
    ]
    if not new:
        return
    for name, future in client.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won
                raise KafkaUnavailable(f"could not create topic {name}: {exc}") from exc
    _wait_for_leaders(client, [t.topic for t in new], timeout)


def topic_id(settings: Settings, name: str, timeout: float = 30.0) -> str:
    """The broker's id of a topic: a topic deleted and created again under the same name
    gets a new one."""
    client = admin(settings)
    try:
        described = client.describe_topics(TopicCollection([name]), request_timeout=timeout)
        return str(described[name].result().topic_id)
    except KafkaException as exc:
        raise KafkaUnavailable(f"could not describe topic {name}: {exc}") from exc


def delete_namespace(settings: Settings, wait: bool = True, timeout: float = 30.0) -> None:
    """Delete every topic of the namespace (`Topics.owns`); with `wait`, until the broker no
    longer lists them."""
    topics = Topics(settings.namespace)
    client = admin(settings)

    def remaining() -> list[str]:
        return [t for t in client.list_topics(timeout=timeout).topics if topics.owns(t)]

    try:
        names = remaining()
        if names:
            for future in client.delete_topics(names, operation_timeout=timeout).values():
                future.result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while wait and remaining():
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"topics of {settings.namespace} still listed")
            time.sleep(0.2)
    except KafkaException as exc:
        raise KafkaUnavailable(f"could not delete the topics of {settings.namespace}: "
                               f"{exc}") from exc


def _wait_for_leaders(client: AdminClient, names: list[str], timeout: float) -> None:
    """A topic is usable once every partition has a leader; right after creation, reads of
    a partition still electing one fail with NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout
    while True:
        topics = client.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].partitions and
               all(p.leader >= 0 for p in topics[name].partitions.values()) for name in names):
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"no leader for every partition of {', '.join(names)}")
        time.sleep(0.1)


_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT}


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """(low, high) of one partition, retrying the transient errors of a fresh topic."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() not in _TRANSIENT or time.monotonic() > deadline:
                raise KafkaUnavailable(f"offsets of {tp.topic}[{tp.partition}]: {exc}") from exc
            time.sleep(0.2)


def topic_partitions(settings: Settings, topic: str, timeout: float = 10.0) -> int:
    """How many partitions a topic has (the producer partitions by this, not the setting)."""
    md = admin(settings).list_topics(topic, timeout=timeout)
    info = md.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise KafkaUnavailable(f"topic {topic} is not available")
    return len(info.partitions)


def read_all(settings: Settings, topic: str, timeout: float = 30.0,
             isolation_level: str = "read_committed") -> Iterator[Message]:
    """Every message of `topic` from the beginning up to its end at the time of the call.

    No consumer group is used (partitions are assigned, nothing is committed), so reading a
    topic this way never disturbs the stream app. Only committed transactions are read,
    unless `isolation_level` says `read_uncommitted`.
    """
    consumer = _reader(settings, isolation_level)
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        info = md.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaUnavailable(f"topic {topic} is not available")
        ranges = {p: watermarks(consumer, TopicPartition(topic, p), timeout)
                  for p in info.partitions}
        yield from _read(consumer, topic, ranges, timeout)
    finally:
        consumer.close()


def read_range(settings: Settings, topic: str, partition: int, start: int, end: int,
               timeout: float = 30.0) -> Iterator[Message]:
    """The messages at offsets [start, end) of one partition (those still in the log), read
    like `read_all`, without a group."""
    consumer = _reader(settings)
    try:
        low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
        yield from _read(consumer, topic, {partition: (max(start, low), min(end, high))},
                         timeout)
    finally:
        consumer.close()


def _reader(settings: Settings, isolation_level: str = "read_committed") -> Consumer:
    return Consumer(client_config(settings, **{
        "group.id": "salesflow-reader", "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": isolation_level}))


def _read(consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]],
          timeout: float) -> Iterator[Message]:
    """The messages in `[start, end)` per partition; `timeout` bounds each wait.

    A partition is done at its end offset or at the end of its log, whichever comes first:
    transaction markers take offsets without being messages, and a read_committed reader
    stops before a transaction that is still open.
    """
    ends = {p: end for p, (start, end) in ranges.items() if end > start}
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in ends])
    deadline = time.monotonic() + timeout
    while ends:
        batch = consumer.consume(1000, timeout=0.5)
        if not batch and time.monotonic() > deadline:
            raise KafkaUnavailable(f"timed out reading {topic}")
        for msg in batch:
            deadline = time.monotonic() + timeout
            end = ends.get(msg.partition())
            if end is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition())
                    continue
                raise KafkaUnavailable(f"reading {topic}: {error.str()}")
            if msg.offset() >= end:  # past the range (written since the call)
                ends.pop(msg.partition())
                continue
            yield msg
            if msg.offset() >= end - 1:
                ends.pop(msg.partition())


def group_lag(settings: Settings, group: str, topic: str, timeout: float = 10.0
              ) -> dict[int, int]:
    """Messages of `topic` not yet committed by consumer `group`, per partition."""
    consumer = Consumer(client_config(settings, **{"group.id": group,
                                                    "enable.auto.commit": False}))
    try:
        md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise KafkaUnavailable(f"topic {topic} is not available")
        committed = consumer.committed([TopicPartition(topic, p) for p in md.partitions],
                                       timeout=timeout)
        lag = {}
        for tp in committed:
            low, high = watermarks(consumer, tp, timeout)
            done = tp.offset if tp.offset >= 0 else low
            lag[tp.partition] = max(0, high - done)
        return lag
    except KafkaException as exc:
        raise KafkaUnavailable(f"could not read the lag of {group}: {exc}") from exc
    finally:
        consumer.close()


def wait_for_group(settings: Settings, group: str, topic: str, timeout: float) -> None:
    """Until `group` has committed everything that is in `topic` now (bounded)."""
    deadline = time.monotonic() + timeout
    while (behind := sum(group_lag(settings, group, topic).values())) > 0:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"the stream app still has {behind} message(s) of {topic} to process after "
                f"{timeout:.0f}s (is `salesflow stream` running?)")
        time.sleep(0.5)


def end_offsets(settings: Settings, partitions: Iterable[tuple[str, int]],
                timeout: float = 30.0, *, committed: bool = False,
                client: AdminClient | None = None) -> dict[tuple[str, int], int]:
    """The end offset of many partitions in one request: the high watermark, or with
    `committed` the last stable offset (what a read_committed reader can reach now).

    (A consumer's own `get_watermark_offsets` queues behind its fetch long-poll: about half a
    second per partition while it is assigned.) Pass `client` to reuse an admin client.
    """
    wanted = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
    if not wanted:
        return {}
    client = client or admin(settings)  # must outlive its futures
    isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    try:
        futures = client.list_offsets(wanted, request_timeout=timeout,
                                      isolation_level=isolation)
        return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}
    except (KafkaException, TimeoutError) as exc:  # a future's wait: a bare TimeoutError
        raise KafkaUnavailable(f"could not read end offsets: {exc or 'timed out'}") from exc
