"""Mart builder: full flush, incremental flush and rebuild, next to a bare read of the topic.

The stream app's output is written straight to its topics, exactly as the stream app writes it
(`salesflow.tables`: per-partition partial aggregates on the `customers` and `team`
changelogs, `PartitionCounts` on `counts`, and `ValidSales` envelopes of the packed sales
messages on `<ns>.sales.valid`), so this measures the mart builder alone. Everything runs in
this process against the same broker and databases, so the ratios mean something on a noisy
machine.

    python benchmarks/marts.py [--rows 1000000] [--db sqlite] [--db mysql+pymysql://root@host]

`--db sqlite` is a temporary SQLite file; a MySQL/MariaDB URL without a database gets a
database of its own for the run (dropped afterwards). Measured per database:
- full flush: a new builder's first flush of every aggregate (read the changelogs, compute,
  write every row);
- flush after 1,000 new sales: the stream output of 1,000 more sales (spread over the
  customers and the months like the others), then one flush;
- rebuild: `marts rebuild` from the valid-sales topic;
and once, the bare loop the rebuild is compared with: consume every message of the valid-sales
topic and decode it to its sales (the envelope, then `Codec.decode_sales`), nothing else. For
context, the floors of a full flush: consuming the source records without doing anything with
them, and the database taking as many rows in plain INSERTs into an empty table.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa
from confluent_kafka import Producer

from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from mart_builder.rebuild import rebuild
from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.rows import parse_sale
from salesflow.codec import Codec
from salesflow.kafka import client_config, delete_namespace, ensure_topics, partition_for, read_all
from salesflow.sale import Sale
from salesflow.settings import Settings
from salesflow.tables import (
    COUNTS,
    COUNTS_KEY,
    CUSTOMERS,
    TEAM,
    CustomerMonth,
    PartitionCounts,
    TeamMonth,
    customer_key,
    team_key,
)
from salesflow.topics import Topics


class StreamOutput:
    """What the stream app writes for accepted sales: changelogs, counts, valid sales."""

    def __init__(self, settings: Settings, batch: int) -> None:
        self.settings = settings
        self.batch = batch
        self.topics = Topics(settings.namespace)
        self.producer = Producer(client_config(settings, **{"linger.ms": 50,
                                                            "queue.buffering.max.kbytes": 262144}))
        self.codec = Codec()
        self.customers: dict[tuple[int, bytes], CustomerMonth] = {}
        self.team: dict[tuple[int, bytes], TeamMonth] = {}
        self.counts: dict[int, PartitionCounts] = defaultdict(PartitionCounts)

    def add(self, sales: list[Sale]) -> None:
        by_partition: dict[int, list[Sale]] = defaultdict(list)
        for sale in sales:
            by_partition[partition_for(sale.sale_id, self.settings.partitions)].append(sale)
        touched_c: set[tuple[int, bytes]] = set()
        touched_t: set[tuple[int, bytes]] = set()
        now_ms = int(time.time() * 1000)
        for p, part in by_partition.items():
            for start in range(0, len(part), self.batch):
                chunk = part[start:start + self.batch]
                message = (self.codec.encode("sale_batch",
                                             {"sales": [s.to_record() for s in chunk]})
                           if len(chunk) > 1 else self.codec.encode_sale(chunk[0]))
                self._send(self.topics.valid_sales, p, None, self.codec.encode_valid_sales(
                    [(message, list(range(len(chunk))), [s.price_cents for s in chunk])]))
            for sale in part:
                key = (p, customer_key(sale.customer_id, sale.month))
                if (agg := self.customers.get(key)) is None:
                    agg = self.customers[key] = CustomerMonth(sale.customer_id, sale.month)
                agg.add(sale)
                agg.add_store(sale.sales_date, sale.store_id)
                touched_c.add(key)
                tkey = (p, team_key(sale.store_id, sale.sales_person_id, sale.month))
                if (tagg := self.team.get(tkey)) is None:
                    tagg = self.team[tkey] = TeamMonth(sale.store_id, sale.sales_person_id,
                                                       sale.month)
                tagg.add(sale)
                touched_t.add(tkey)
            counts = self.counts[p]
            counts.records_in += len(part)
            counts.accepted += len(part)
            counts.newest_ms = now_ms
        for table, touched, values in ((CUSTOMERS, touched_c, self.customers),
                                       (TEAM, touched_t, self.team)):
            topic = self.topics.changelog(table)
            for p, key in touched:
                self._send(topic, p, key, values[(p, key)].encode())
        for p in by_partition:
            self._send(self.topics.changelog(COUNTS), p, COUNTS_KEY, self.counts[p].encode())
        self.producer.flush(300)

    def _send(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)


def bare_loop(settings: Settings) -> tuple[int, dict[str, float]]:
    """Sales in the valid-sales topic, and seconds to consume it and decode: the envelopes
    only; envelopes and their sales (`decode_sales`, the bare loop); envelopes and the five
    facts the marts need (`decode_sale_facts`, what the rebuild decodes)."""
    codec = Codec()
    topic = Topics(settings.namespace).valid_sales
    out: dict[str, float] = {}
    n = 0
    for name, decode in (("envelopes", None),
                         ("sales", lambda message: codec.decode_sales(message).sales),
                         ("facts", codec.decode_sale_facts)):
        t0 = time.perf_counter()
        n = 0
        for msg in read_all(settings, topic):
            record = codec.decode(msg.value()).record
            if decode is not None:
                for entry in record["messages"]:  # a ValidSales envelope's input messages
                    n += len(decode(entry["message"]))  # type: ignore[operator]
        out[name] = time.perf_counter() - t0
    return n, out


def changelog_floor(settings: Settings) -> tuple[int, float]:
    """Records on the builder's sources, and seconds to merely consume them all (the builder's
    own reader, handing each record to a handler that does nothing)."""
    from mart_builder.changelogs import ChangelogReader

    topics = Topics(settings.namespace)
    sources = [*(topics.changelog(t) for t in (CUSTOMERS, TEAM, COUNTS)), *topics.dims.values()]
    reader = ChangelogReader(settings, dict.fromkeys(sources, lambda *_: None))
    t0 = time.perf_counter()
    n = reader.catch_up()
    seconds = time.perf_counter() - t0
    reader.close()
    return n, seconds


def database_floor(url: str, rows: int) -> float:
    """Seconds for the database to take `rows` customer rows in plain multi-row INSERTs
    into an empty customers mart (`replace_all`, as a rebuild fills its staging table): the
    write's floor. Run last: it replaces the mart."""
    from mart_builder.schema import migrate
    from mart_builder.writer import MartWriter

    engine = sa.create_engine(url)
    migrate(engine)
    writer = MartWriter(engine)
    values = [(c, "Asha Rao", "Delhi, 110011", "9100000001", f"{2024 + m // 12}-{m % 12 + 1:02d}",
               100_00 + c, 2_400_00 + c, "2024-01", "2025-12", 24, 100_00, 100_00, 50_00, 30_00,
               False, "Regular") for c in range(1, int(rows) // 24 + 2) for m in range(24)]
    values = values[:int(rows)]
    t0 = time.perf_counter()
    writer.replace_all(values, [])
    seconds = time.perf_counter() - t0
    engine.dispose()
    return seconds


def read_sales(path: Path) -> list[Sale]:
    with path.open(newline="") as f:
        return [Sale.from_record(s) for s in map(parse_sale, csv.DictReader(f))
                if isinstance(s, dict)]


def database_url(spec: str, tmp: Path, run_id: str) -> tuple[str, str | None]:
    """(the URL to use, the MySQL database created for it or None)."""
    if spec == "sqlite":
        return f"sqlite:///{tmp / f'marts-{uuid.uuid4().hex[:6]}.db'}", None
    server = sa.make_url(spec)
    name = f"bench_{run_id}"
    engine = sa.create_engine(server.set(database=None))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False), name


def drop_database(spec: str, name: str) -> None:
    engine = sa.create_engine(sa.make_url(spec).set(database=None))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    engine.dispose()


def measure(settings: Settings, output: StreamOutput, late: list[Sale]) -> dict[str, float]:
    writer = open_writer(settings)
    builder = MartBuilder(settings, writer)
    t0 = time.perf_counter()
    full = builder.flush()
    out = {"full": time.perf_counter() - t0, "full_rows": full.customer_rows + full.team_rows}
    if late:
        output.add(late)
    t0 = time.perf_counter()
    inc = builder.flush()
    out |= {"incremental": time.perf_counter() - t0,
            "incremental_rows": inc.customer_rows + inc.team_rows}
    builder.close()
    t0 = time.perf_counter()
    rebuilt = rebuild(settings, writer)
    out |= {"rebuild": time.perf_counter() - t0, "rebuild_rows": rebuilt.customer_rows}
    writer.engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--late", type=int, default=1_000, help="sales of the incremental flush")
    parser.add_argument("--batch", type=int, default=500,
                        help="sales per message (1: single-sale messages)")
    parser.add_argument("--db", action="append", default=None,
                        help="sqlite, or a MySQL/MariaDB server URL (repeatable)")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    settings = Settings(namespace=f"bench{run_id}")
    created: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        try:
            topics = Topics(settings.namespace)
            ensure_topics(settings)
            ensure_topics(settings, [topics.changelog(t) for t in (CUSTOMERS, TEAM, COUNTS)])
            dbs = args.db or ["sqlite"]
            spec = GenerateSpec(rows=args.rows + args.late * len(dbs),
                                customers=max(500, args.rows // 100))
            sales = read_sales(generate(tmp, spec))
            produce_dims(settings, tmp)
            output = StreamOutput(settings, args.batch)
            output.add(sales[:args.rows])
            n, bare = bare_loop(settings)
            bare_s = bare["sales"]
            records, consume_s = changelog_floor(settings)
            print(f"sales {n:,} ({args.batch} per message), +{args.late:,} new sales; "
                  f"{len(output.customers):,} customer and {len(output.team):,} team "
                  f"partials on the changelogs", flush=True)
            print(f"bare consume + decode of the valid sales:      {bare_s:8.2f}s")
            print(f"  (consume + decode of the envelopes only:     {bare['envelopes']:8.2f}s; "
                  f"of envelopes and facts: {bare['facts']:.2f}s)")
            print(f"floor of a full flush's reading: consume of the {records:,} source "
                  f"records: {consume_s:.2f}s", flush=True)
            for i, spec_db in enumerate(dbs):
                # each database's incremental flush gets 1,000 sales of its own; the full
                # flush of a later database includes those of the ones before
                late = sales[args.rows + i * args.late:args.rows + (i + 1) * args.late]
                url, name = database_url(spec_db, tmp, run_id)
                if name:
                    created.append((spec_db, name))
                db = settings.model_copy(update={"mart_db_url": url})
                kind = sa.make_url(url).get_backend_name()
                m = measure(db, output, late)
                floor = database_floor(url, m["full_rows"])
                print(f"[{kind}] full flush:                  {m['full']:8.2f}s "
                      f"({m['full_rows']:,.0f} rows)")
                print(f"[{kind}] flush after {args.late:,} new sales:  {m['incremental']:8.2f}s "
                      f"({m['incremental_rows']:,.0f} rows)")
                print(f"[{kind}] rebuild:                     {m['rebuild']:8.2f}s "
                      f"({m['rebuild_rows']:,.0f} customer rows)")
                print(f"[{kind}] ratio bare loop / rebuild:   {bare_s / m['rebuild']:8.2f} "
                      f"(envelopes only: {bare['envelopes'] / m['rebuild']:.2f}; envelopes "
                      f"and facts: {bare['facts'] / m['rebuild']:.2f})")
                print(f"[{kind}] floor of a full flush's writing: as many rows inserted into "
                      f"an empty mart in {floor:.2f}s", flush=True)
        finally:
            for spec_db, name in created:
                drop_database(spec_db, name)
            delete_namespace(settings, wait=False)


if __name__ == "__main__":
    main()
