"""Crash and rebalance safety of the stream app against the real broker, with real workers.

While a paced producer sends ~20,000 generated sales (2 % of them bad: every rejection
reason, exact replays and conflicting duplicates), packed 50 to a message or one sale per
message, workers are killed with SIGKILL, stopped, added and restarted. Afterwards the state
must be exactly what one clean pass would give:
- the `customers` and `team` changelogs, merged over partitions, equal the aggregates
  computed directly (`mart_builder.metrics.aggregate`) from the accepted sales, read back
  from `<ns>.sales.valid` and, independently, derived from the CSV with the same rules;
- the `counts` changelog says in == accepted + replays + dead-lettered, per reason exactly as
  the CSV predicts, and accepted == the number of distinct valid sale ids;
- no partition's messages were skipped: the offset ranges recorded in the `counts`
  changelog's history continue each other.
"""

from __future__ import annotations

import csv
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mart_builder.metrics import aggregate, merge_customer_months, merge_team_months
from producers.dims import produce_dims, read_dimension
from producers.generate import GenerateSpec, generate
from producers.rows import parse_sale
from producers.sales import produce_sales
from salesflow.anomalies import AnomalyRules
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter, Reason
from salesflow.kafka import client_config, end_offsets, partition_for, read_all
from salesflow.sale import ProductPrice, Sale, cents
from salesflow.settings import Settings
from salesflow.tables import COUNTS, COUNTS_KEY, PRICE_FLAGS, PartitionCounts, PriceFlag
from salesflow.topics import DIMENSIONS, Topics
from stream_app.validation import StaticDimensions, validate
from tests.workers import (
    StreamWorker,
    accepted_sales,
    aggregates,
    totals,
    wait_until_processed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.crash]

ROWS = 20_000
FILES = 24  # the sales go out file by file, with pauses, so faults land mid-stream
BATCH = 50  # sales per message: many messages, many commit points
# Long transactions: a worker that keeps up is idle between the feeder's files, and a kill
# must land inside an open transaction to prove that its work is thrown away and redone.
WORKER_ENV = {"SALESFLOW_COMMIT_INTERVAL_SECONDS": "1.5"}


# --- input -------------------------------------------------------------------------------------


def split_sales(sales: Path, parts: int) -> list[Path]:
    """Cut a sales CSV into `parts` files (each with the header), keeping row order."""
    with sales.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    size = -(-len(rows) // parts)
    out = []
    for i in range(0, len(rows), size):
        path = sales.with_name(f"sales_{len(out):03d}.csv")
        with path.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows[i:i + size])
        out.append(path)
    return out


def prepare(settings: Settings, tmp_path: Path) -> list[Path]:
    """Generated dimensions on their topics; the sales cut into files, not sent yet."""
    data = tmp_path / "data"
    sales = generate(data, GenerateSpec(rows=ROWS, bad_fraction=0.02, anomalies=3))
    produce_dims(settings, data)
    return split_sales(sales, FILES)


def send_single(settings: Settings, path: Path) -> None:
    """One sale per message, keyed by sale_id, as upstream systems send them (rows that are
    not sales are left out: a producer would have dead-lettered them)."""
    codec, topic = Codec(), Topics(settings.namespace).sales
    producer = Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all",
                                                   "linger.ms": 5}))
    errors: list = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            sale = parse_sale(row)
            if isinstance(sale, dict):
                producer.produce(topic, codec.encode("sale", sale), sale["sale_id"].encode(),
                                 partition=partition_for(sale["sale_id"], settings.partitions),
                                 on_delivery=lambda err, _m: err and errors.append(err))
                producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]


class Feeder(threading.Thread):
    """Sends the files one by one in the background, pausing between them, but only as many
    as the test has allowed so far: each fault step allows a few more, so every fault lands
    while sales flow however slow the machine is (a feeder that ran ahead would leave the
    later faults with nothing to process)."""

    def __init__(self, settings: Settings, files: list[Path], shape: str,
                 pause: float = 0.7) -> None:
        super().__init__(name="feeder", daemon=True)
        self.settings, self.files, self.pause = settings, files, pause
        self.shape = shape
        self._allowed = 0
        self._cond = threading.Condition()
        self.sent_files = 0
        self.error: BaseException | None = None

    def allow(self, files: int) -> None:
        with self._cond:
            self._allowed += files
            self._cond.notify_all()

    def run(self) -> None:
        try:
            for i, path in enumerate(self.files):
                with self._cond:
                    if not self._cond.wait_for(lambda i=i: self._allowed > i, timeout=300):
                        raise TimeoutError("the test never allowed the rest of the files")
                if self.shape == "packed":
                    produce_sales(self.settings, [path], batch_size=BATCH, workers=1)
                else:
                    send_single(self.settings, path)
                self.sent_files += 1
                time.sleep(self.pause)
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc

    def finish(self, timeout: float = 120.0) -> None:
        self.allow(len(self.files))
        self.join(timeout)
        assert not self.is_alive(), "the feeder did not finish"
        if self.error is not None:
            raise self.error


class Progress:
    """Committed offsets of the stream app's group vs the end of the sales topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.namespace)
        self.consumer = Consumer(client_config(settings, **{
            "group.id": self.topics.app_id, "enable.auto.commit": False}))
        self.tps = [TopicPartition(self.topics.sales, p) for p in range(settings.partitions)]

    def snapshot(self) -> tuple[int, int]:
        """(sum of committed offsets, sum of end offsets) over the sales partitions."""
        committed = self.consumer.committed(self.tps, timeout=10)
        done = sum(max(tp.offset, 0) for tp in committed)
        high = sum(self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps)
        return done, high

    def open_transaction(self) -> bool:
        """Whether a worker holds accepted sales it has sent but not committed yet: the valid
        topic's end is past its last stable offset."""
        valid = [(self.topics.valid_sales, tp.partition) for tp in self.tps]
        return any(high > stable for high, stable in zip(
            end_offsets(self.settings, valid).values(),
            end_offsets(self.settings, valid, committed=True).values(), strict=True))

    def wait_open_transaction(self, timeout: float = 30.0) -> bool:
        """Until a kill now would throw processed work away (False if none came)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.open_transaction():
                return True
            time.sleep(0.02)
        return False

    def wait_advance(self, beyond: int, timeout: float = 90.0) -> int:
        """Wait until the group has committed past `beyond` (a worker is really working)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = self.snapshot()
            if done > beyond:
                return done
            time.sleep(0.2)
        raise AssertionError(f"no commit past {beyond} within {timeout}s")

    def close(self) -> None:
        self.consumer.close()


# --- what the result must be -------------------------------------------------------------------


@dataclass
class Expected:
    """One clean pass over the CSV with the stream app's rules, in send order."""

    accepted: dict[str, Sale] = field(default_factory=dict)
    price_flags: set[PriceFlag] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    dead: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sale_id, reason)


def dimensions_of(data: Path) -> StaticDimensions:
    dims = {name: read_dimension(data / f"{name}.csv", name) for name in DIMENSIONS}
    return StaticDimensions(
        customers={i for i, _ in dims["customer"]}, stores={i for i, _ in dims["store"]},
        sales_people={i for i, _ in dims["sales_team"]},
        products={r["name"]: ProductPrice(cents(r["current_price"]),
                                          cents(r["old_price"]) if r["old_price"] else None,
                                          r["updated_date"]) for _, r in dims["product"]})


def expected_from_csv(files: list[Path]) -> Expected:
    dims = dimensions_of(files[0].parent)
    today = datetime.now(UTC).date()
    exp = Expected()
    for path in files:
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                record = parse_sale(row)
                if not isinstance(record, dict):
                    continue  # rejected by the producer: never on the sales topic
                sale = Sale.from_record(record)
                exp.counts["in"] += 1
                prior = exp.accepted.get(sale.sale_id)
                if prior is not None and prior.digest() == sale.digest():
                    exp.counts["replays"] += 1
                    continue
                rejection = validate(sale, dims, today)
                reason = (rejection.reason if rejection is not None
                          else Reason.CONFLICTING_DUPLICATE if prior is not None else None)
                if reason is None:
                    exp.accepted[sale.sale_id] = sale
                    exp.counts["accepted"] += 1
                    listed = dims.products[sale.product_name].list_cents(sale.sales_date)
                    if AnomalyRules().price_off_list(sale.price_cents, listed):
                        exp.price_flags.add(PriceFlag(
                            sale.sale_id, sale.customer_id, sale.store_id,
                            sale.sales_person_id, sale.sales_date, sale.price_cents, listed))
                else:
                    exp.counts[f"dead_lettered:{reason.value}"] += 1
                    exp.dead[(sale.sale_id, reason.value)] += 1
    return exp


def valid_sales(settings: Settings) -> tuple[dict[str, Sale], int]:
    """The accepted sales of `<ns>.sales.valid` by sale_id (each exactly once, on its home
    partition), and how many were written in all, aborted transactions included (more:
    a killed worker's transaction had sent some, and its successor did the work again)."""
    out: dict[str, Sale] = {}
    for partition, sale in accepted_sales(settings):
        assert sale.sale_id not in out, f"{sale.sale_id} accepted twice"
        assert partition == partition_for(sale.sale_id, settings.partitions)
        out[sale.sale_id] = sale
    copies = accepted_sales(settings, committed=False)
    for _, sale in copies:
        assert out.get(sale.sale_id, sale) == sale, f"two different accepted {sale.sale_id}"
    return out, len(copies)


def stream_dead_letters(settings: Settings) -> Counter[tuple[str, str]]:
    """Distinct dead letters of the stream app (a redelivered message re-sends its own)."""
    distinct = set()
    for msg in read_all(settings, Topics(settings.namespace).dlq):
        d = DeadLetter.from_message(msg.value(), msg.key(), msg.headers())
        if d.offset is not None:  # not a producer-side rejection
            distinct.add((d.partition, d.offset, d.sale_id, d.reason.value, d.value))
    return Counter((sale_id, reason) for _, _, sale_id, reason, _ in distinct)


def skipped_offsets(settings: Settings) -> dict[int, list[tuple[int, int]]]:
    """Per partition, the ranges of sales offsets the workers jumped over.

    Every committed transaction writes, per partition, the range of offsets it applied
    (`PartitionCounts.first_offset` .. `last_offset`), so in the changelog's history the
    ranges of one partition must continue each other: a gap means messages never applied.
    """
    topic = Topics(settings.namespace).changelog(COUNTS)
    last: dict[int, int] = {}
    jumps: dict[int, list[tuple[int, int]]] = {}
    for msg in read_all(settings, topic):
        if msg.key() != COUNTS_KEY or msg.value() is None:
            continue
        counts = PartitionCounts.decode(msg.value())
        if counts.first_offset is None:
            continue
        partition, expected = msg.partition(), last.get(msg.partition(), -1) + 1
        if counts.first_offset != expected:
            jumps.setdefault(partition, []).append((expected, counts.first_offset - 1))
        assert counts.last_offset is not None
        last[partition] = counts.last_offset
    return jumps


def diff(name: str, got: dict, want: dict, limit: int = 10) -> str:
    keys = sorted(set(got) | set(want), key=str)
    bad = [f"  {k}: got {got.get(k)} want {want.get(k)}" for k in keys if got.get(k) != want.get(k)]
    return f"{name}: {len(bad)} keys differ\n" + "\n".join(bad[:limit])


def assert_exact(settings: Settings, files: list[Path]) -> int:
    """Everything must be exactly one clean pass; returns how many accepted sales a killed
    worker had sent in a transaction that was then aborted (evidence of replayed input)."""
    exp = expected_from_csv(files)
    skipped = skipped_offsets(settings)
    assert not skipped, f"sales offsets skipped, then never or late processed: {skipped}"

    accepted, copies = valid_sales(settings)
    assert set(accepted) == set(exp.accepted), (
        f"valid topic: missing {sorted(set(exp.accepted) - set(accepted))[:5]}, "
        f"unexpected {sorted(set(accepted) - set(exp.accepted))[:5]}")
    for sale_id, sale in exp.accepted.items():
        assert accepted[sale_id] == sale, sale_id

    want_customers, want_team = aggregate(accepted.values())
    csv_customers, csv_team = aggregate(exp.accepted.values())
    assert (want_customers, want_team) == (csv_customers, csv_team)

    customer_parts, team_parts = aggregates(settings)
    customers, team = merge_customer_months(customer_parts), merge_team_months(team_parts)
    assert customers == want_customers, diff("customers", customers, want_customers)
    assert team == want_team, diff("team", team, want_team)
    assert sum(c.count for c in customers.values()) == len(accepted)

    counts = totals(settings)
    assert counts.reconciled and counts.waiting == 0, counts
    assert counts.accepted == len(accepted), counts
    got = Counter({"in": counts.records_in, "accepted": counts.accepted,
                   "replays": counts.replays} | {
        f"dead_lettered:{reason}": n for reason, n in counts.dead_lettered.items()})
    got = Counter({k: v for k, v in got.items() if v})
    assert got == exp.counts, diff("counts", dict(got), dict(exp.counts))
    assert stream_dead_letters(settings) == exp.dead
    flags = {PriceFlag.decode(m.key(), m.value())
             for m in read_all(settings, Topics(settings.namespace).changelog(PRICE_FLAGS))}
    assert flags == exp.price_flags and len(flags) >= 3
    assert exp.counts["replays"] > 0 and exp.counts["dead_lettered:conflicting_duplicate"] > 0
    return copies - len(accepted)


# --- the tests ---------------------------------------------------------------------------------


SHAPES = pytest.mark.parametrize("shape", ["packed", "single"])


@SHAPES
def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(settings, tmp_path, shape):
    started = time.monotonic()
    files = prepare(settings, tmp_path)
    rng = random.Random()
    feeder = Feeder(settings, files, shape)
    progress = Progress(settings)
    worker = StreamWorker(settings, tmp_path, "worker", **WORKER_ENV)
    kills = []
    try:
        feeder.allow(6)
        feeder.start()
        worker.start()
        done = -1
        for _ in range(3):
            feeder.allow(5)
            done = progress.wait_advance(done)  # the worker is processing
            time.sleep(rng.uniform(0.2, 2.5))
            progress.wait_open_transaction()  # mid-transaction: work to throw away
            worker.kill()
            done, high = progress.snapshot()
            kills.append((round(time.monotonic() - started, 1), high - done))
            worker.start()
        feeder.finish()
        wait_until_processed(settings, timeout=120)
        worker.stop()
    finally:
        feeder.allow(len(files))
        progress.close()
        worker.kill()
    assert any(behind > 0 for _, behind in kills), f"no kill landed mid-stream: {kills}"
    redelivered = assert_exact(settings, files)
    print(f"kills at (s, messages behind): {kills}; {redelivered} accepted sales redelivered;"
          f" total {time.monotonic() - started:.0f}s")
    assert redelivered > 0, "no kill made Kafka redeliver processed sales"


@SHAPES
def test_rebalances_and_a_kill_mid_stream_keep_aggregates_exact(settings, tmp_path, shape):
    started = time.monotonic()
    files = prepare(settings, tmp_path)
    rng = random.Random()
    feeder = Feeder(settings, files, shape)
    progress = Progress(settings)
    workers = [StreamWorker(settings, tmp_path, f"worker{i}", **WORKER_ENV) for i in range(3)]
    events = []

    def step(what: str) -> None:
        done, high = progress.snapshot()
        events.append((what, round(time.monotonic() - started, 1), high - done))

    def busy(done: int) -> int:
        """A few more files, then wait until they are being processed, and a bit more."""
        feeder.allow(5)
        done = progress.wait_advance(done)
        time.sleep(rng.uniform(0.2, 2.0))
        return done

    try:
        workers[0].start()
        workers[1].start()
        feeder.allow(4)
        feeder.start()
        done = busy(-1)
        workers[2].start()  # a third member: partitions move
        step("start w2")
        done = busy(done)
        workers[0].stop()  # a clean leave: partitions move again
        step("stop w0")
        done = busy(done)
        workers[1].kill()  # a crash: its partitions wait for the session timeout
        step("kill w1")
        done = busy(done)
        workers[0].start()  # back to two members, while the third is behind
        step("restart w0")
        done = busy(done)
        workers[1].start()  # three again: members keep partitions they have fetched ahead
        step("restart w1")
        feeder.finish()
        wait_until_processed(settings, timeout=120)
    finally:
        feeder.allow(len(files))
        progress.close()
        for w in workers:
            w.stop()
    redelivered = assert_exact(settings, files)
    print(f"events (what, s, messages behind): {events}; {redelivered} accepted sales "
          f"redelivered; total {time.monotonic() - started:.0f}s")
