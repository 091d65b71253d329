"""`salesflow tail TOPIC`: the records of a topic, decoded, one JSON object per line.

The wire format (Avro single-object or Confluent framing, sales packed 500 to a message) is
not readable with kcat; this is. Reads without a consumer group (nothing is committed) and
only committed transactions.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter
from salesflow.errors import ConfigError, DecodeError, KafkaUnavailable
from salesflow.settings import Settings
from salesflow.tables import (
    COUNTS,
    CUSTOMERS,
    PARKED,
    PRICE_FLAGS,
    SEEN,
    TEAM,
    CustomerMonth,
    Parked,
    PriceFlag,
    TeamMonth,
    unpack_seen,
)
from salesflow.topics import Topics


def resolve(topics: Topics, name: str, existing: set[str]) -> str:
    """A topic name from its full name or a short one (sales, dlq, valid, customer, counts...)."""
    short = {"sales": topics.sales, "dlq": topics.dlq, "valid": topics.valid_sales,
             "valid_sales": topics.valid_sales, **topics.dims, **topics.changelogs}
    topic = short.get(name, name)
    if topic not in existing:
        mine = sorted(t for t in existing if topics.owns(t))
        raise ConfigError(f"no topic {topic!r} on the broker"
                          + (f"; topics of namespace {topics.namespace!r}: {', '.join(mine)}"
                             if mine else f"; namespace {topics.namespace!r} has no topics"))
    return topic


def describe(topics: Topics, codec: Codec, topic: str, partition: int, offset: int,
             timestamp_ms: int, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
    """One message as a JSON-ready dict: where it is, its key, and its value decoded."""
    out: dict[str, Any] = {
        "topic": topic, "partition": partition, "offset": offset,
        "time": datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(
            timespec="milliseconds") if timestamp_ms > 0 else None,
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }
    try:
        out.update(_value(topics, codec, topic, key, value, headers))
    except (DecodeError, ValueError, KeyError) as exc:
        out["undecodable"] = str(exc)
        out["value_hex"] = value.hex() if value else None
    return out


def _value(topics: Topics, codec: Codec, topic: str, key: bytes | None, value: bytes | None,
           headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
    if value is None:
        return {"deleted": True}
    if topic == topics.dlq:
        from stream_app.dlq import Letter, as_dict

        dead = DeadLetter.from_message(value, key, headers)
        return {"dead_letter": as_dict(Letter(dead, -1, -1), codec)}
    if topic == topics.valid_sales:
        accepted = []
        for entry in codec.decode(value).record["messages"]:
            sales = codec.decode(entry["message"]).record
            items = sales.get("sales", [sales])
            accepted += [items[i] | {"list_price_cents": listed}
                         for i, listed in zip(entry["accepted"], entry["list_price_cents"],
                                              strict=True)]
        return {"accepted": accepted}
    if topic in topics.changelogs.values():
        table = next(t for t, name in topics.changelogs.items() if name == topic)
        return {"table": table, "value": _table_value(table, key, value, codec)}
    decoded = codec.decode(value)
    return {"record": decoded.name, "value": decoded.record}


def _table_value(table: str, key: bytes | None, value: bytes, codec: Codec) -> Any:
    if table == COUNTS:
        return json.loads(value)
    if table == CUSTOMERS and key:
        m = CustomerMonth.decode(key, value)
        return {"total_cents": m.total_cents, "count": m.count, "max_cents": m.max_cents,
                "first_date": m.first_date, "last_date": m.last_date,
                "stores_by_day": {d.isoformat(): list(s) for d, s in m.days().items()}}
    if table == TEAM and key:
        t = TeamMonth.decode(key, value)
        return {"total_cents": t.total_cents, "count": t.count, "max_cents": t.max_cents}
    if table == PARKED:
        p = Parked.decode(value)
        return {"first_seen": datetime.fromtimestamp(p.first_seen, UTC).isoformat(),
                "sale": codec.decode(p.message).record}
    if table == SEEN:
        return [sale_id.decode("utf-8", "replace") for sale_id, _ in unpack_seen(value)]
    if table == PRICE_FLAGS and key:
        f = PriceFlag.decode(key, value)
        return {"customer_id": f.customer_id, "store_id": f.store_id,
                "sales_person_id": f.sales_person_id, "sales_date": f.sales_date,
                "price_cents": f.price_cents, "list_cents": f.list_cents}
    return value.hex()


def run(settings: Settings, name: str, *, last: int | None, follow: bool, limit: int) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from salesflow.codec import codec_for
    from salesflow.kafka import admin, check_reachable, client_config, watermarks

    topics = Topics(settings.namespace)
    check_reachable(settings)
    try:
        existing = set(admin(settings).list_topics(timeout=10).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap}") \
            from exc
    topic = resolve(topics, name, existing)
    codec = codec_for(settings)
    consumer = Consumer(client_config(settings, **{
        "group.id": topics.reader_group, "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": "read_committed"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment, ends = [], {}
        for p in partitions:
            low, high = watermarks(consumer, TopicPartition(topic, p), 10)
            # Transaction markers take offsets too: go back far enough, keep the last N.
            start = low if last is None else max(low, high - 2 * last - 2)
            assignment.append(TopicPartition(topic, p, start))
            if start < high:
                ends[p] = high
        consumer.assign(assignment)
        kept: dict[int, deque[dict[str, Any]]] = {p: deque(maxlen=last or 0)
                                                  for p in partitions}
        printed = 0

        def emit(line: dict[str, Any]) -> bool:
            nonlocal printed
            sys.stdout.write(json.dumps(line, default=str, ensure_ascii=False) + "\n")
            printed += 1
            return bool(limit) and printed >= limit

        idle_since = time.monotonic()
        catching_up = True
        while follow or ends:
            batch = consumer.consume(500, timeout=0.5)
            if not batch and time.monotonic() - idle_since > 10 and ends:
                ends.clear()  # an open transaction holds the rest back
            for msg in batch:
                idle_since = time.monotonic()
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.pop(msg.partition(), None)
                        continue
                    raise KafkaUnavailable(f"reading {topic}: {error.str()}")
                line = describe(topics, codec, topic, msg.partition(), msg.offset(),
                                msg.timestamp()[1], msg.key(), msg.value(), msg.headers())
                if catching_up and last is not None and msg.partition() in ends:
                    kept[msg.partition()].append(line)  # only the last N are printed
                elif emit(line):
                    return
            if catching_up and not ends:
                catching_up = False
                for p in sorted(kept):
                    for line in kept[p]:
                        if emit(line):
                            return
            sys.stdout.flush()
    finally:
        consumer.close()
