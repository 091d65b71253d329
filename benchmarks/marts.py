"""Mart builder: full flush, incremental flush, and rebuild, next to a bare decode loop.

The stream app's output is written straight to its topics (the changelogs of the `customers`
and `team` tables, built with the stream app's own `state` functions, and `<ns>.sales.valid`),
so this measures the mart builder alone. Everything runs in this process against the same
broker and database, so the ratios mean something on a noisy machine.

    python benchmarks/marts.py [--rows 1000000] [--db sqlite:///bench.db]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from mart_builder.rebuild import rebuild
from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.rows import parse_sale
from salesflow.codec import Codec
from salesflow.kafka import client_config, ensure_topics, partition_for, read_all
from salesflow.settings import Settings
from salesflow.topics import Topics
from stream_app import state


class StreamOutput:
    """What the stream app would have written for a list of accepted sales."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(client_config(settings, **{"linger.ms": 50}))
        self.codec = Codec()
        self.customers: dict[str, list[int]] = {}
        self.team: dict[str, list[int]] = {}
        self.offsets: dict[int, int] = {}

    def add(self, sales: list[dict]) -> None:
        topics = Topics(self.settings.namespace)
        touched_c, touched_t = set(), set()
        for sale in sales:
            p = partition_for(sale["sale_id"], self.settings.partitions)
            offset = self.offsets[p] = self.offsets.get(p, -1) + 1
            f = state.facts(sale)
            key = state.customer_key(p, f)
            self.customers[key] = state.apply_customer(self.customers.get(key), f, (offset, 0))
            touched_c.add((p, key))
            key = state.team_key(p, f)
            self.team[key] = state.apply_team(self.team.get(key), f, (offset, 0))
            touched_t.add((p, key))
            self._send(topics.valid_sales, p, f.sale_id.encode(), self.codec.encode("sale", sale))
        for table, touched, values in (("customers", touched_c, self.customers),
                                       ("team", touched_t, self.team)):
            topic = topics.changelog(table)
            for p, key in touched:
                self._send(topic, p, json.dumps(key).encode(), json.dumps(values[key]).encode())
        self.producer.flush(120)

    def _send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default=None, help="mart database URL (default: a temp SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(namespace=f"bench{uuid.uuid4().hex[:8]}",
                            mart_db_url=args.db or f"sqlite:///{Path(tmp) / 'marts.db'}")
        ensure_topics(settings)
        topics = Topics(settings.namespace)
        ensure_topics(settings, [topics.changelog(t) for t in ("customers", "team")])
        spec = GenerateSpec(rows=args.rows + 1000, customers=max(500, args.rows // 100))
        sales_csv = generate(Path(tmp), spec)
        produce_dims(settings, Path(tmp))
        import csv
        with sales_csv.open(newline="") as f:
            sales = [s for s in map(parse_sale, csv.DictReader(f)) if isinstance(s, dict)]
        first, late = sales[:args.rows], sales[args.rows:]
        output = StreamOutput(settings)
        output.add(first)

        writer = open_writer(settings)
        builder = MartBuilder(settings, writer)
        t0 = time.perf_counter()
        full = builder.flush()
        full_s = time.perf_counter() - t0
        output.add(late)
        t0 = time.perf_counter()
        incremental = builder.flush()
        incremental_s = time.perf_counter() - t0
        builder.close()

        t0 = time.perf_counter()
        rebuilt = rebuild(settings, writer)
        rebuild_s = time.perf_counter() - t0

        codec = Codec()
        t0 = time.perf_counter()
        n = sum(1 for m in read_all(settings, Topics(settings.namespace).valid_sales)
                if codec.decode(m.value()))
        bare_s = time.perf_counter() - t0

    backend = settings.mart_db_url.split(":")[0]
    print(f"sales {args.rows:,} (+{len(late):,} late), database {backend}")
    print(f"full flush:         {full_s:8.2f}s  ({full.customer_rows:,} customer rows, "
          f"{full.team_rows:,} team rows)")
    print(f"flush after {len(late):,} new sales: {incremental_s:8.2f}s  "
          f"({incremental.customer_rows:,} customer rows, {incremental.team_rows:,} team rows)")
    print(f"rebuild:            {rebuild_s:8.2f}s  ({rebuilt.customer_rows:,} customer rows)")
    print(f"bare consume+decode of the {n:,} valid sales: {bare_s:8.2f}s")
    print(f"ratio rebuild / bare loop: {rebuild_s / bare_s:6.2f}")


if __name__ == "__main__":
    main()
