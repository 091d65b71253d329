"""Freshness of the marts: from a sale's send to its effect in its mart row, on MariaDB.

A steady flow of sales goes to `<ns>.sales` for `--seconds` (packed `SaleBatch` messages, one
per partition every tick, or one message per sale) while real `salesflow stream` workers and
one `salesflow marts follow` run. Among the sales are probes: every `--probe-every` seconds
one sale of a probe customer (ids above the flow's), sent like any other sale of the flow.
A reader polls those customers' rows (`purchase_frequency`) every `--poll` seconds; the probe
whose count shows up was reflected then: its latency is that moment minus its send. The
follower's own `salesflow_mart_freshness_seconds` is scraped every second alongside.

    python benchmarks/freshness.py [--rate 1000 --rate 5000] [--shape packed --shape single]
        [--seconds 120] [--workers 2] [--interval 2] [--db mysql+pymysql://root@127.0.0.1:3306]

Sales are dated today (a live flow; `--spread` dates them over 2024-2025 like the generator,
so each new sale lands in one of up to 24 months of its customer). `--history N` first sends
N sales spread over those two years (and waits until the marts hold them), so that customers
already have months of rows, each of which a new sale restates.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from confluent_kafka import Producer

from producers.dims import produce_dims
from producers.generate import PRODUCTS, STORES, GenerateSpec, write_dimensions
from salesflow.codec import Codec
from salesflow.kafka import client_config, delete_namespace, ensure_topics, partition_for
from salesflow.sale import EPOCH
from salesflow.settings import Settings
from salesflow.topics import Topics

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A `salesflow` subprocess with its own log and metrics port."""

    def __init__(self, settings: Settings, workdir: Path, name: str, args: list[str],
                 ready: str, interval: float) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
        env.update({
            "SALESFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "SALESFLOW_NAMESPACE": settings.namespace,
            "SALESFLOW_MART_DB_URL": settings.mart_db_url,
            "SALESFLOW_METRICS_PORT": str(self.port),
            "SALESFLOW_FLUSH_INTERVAL_SECONDS": str(interval),
            "SALESFLOW_PARTITIONS": str(settings.partitions),
            "SALESFLOW_STATE_DIR": str(workdir / f"state-{name}"),
            "PYTHONPATH": str(ROOT),
        })
        self.log_path = workdir / f"{name}.log"
        self.ready = ready
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "salesflow_cli", *args],
                                         stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=workdir, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ready not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.log_path.name} not ready:\n"
                                 f"{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


@dataclass
class Flow:
    """Sales of the flow, in the producers' wire form (`parse_sale_for_wire`)."""

    customers: int
    spread: bool
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    n: int = 0

    def sale(self, customer: int | None = None) -> dict:
        rng = self.rng
        store, people = list(STORES.items())[rng.randrange(len(STORES))]
        name, price = list(PRODUCTS.items())[rng.randrange(len(PRODUCTS))]
        cents, quantity = int(price.replace(".", "")), rng.randint(1, 10)
        day = (date(2024, 1, 1).toordinal() + rng.randrange(731) if self.spread
               else datetime.now(UTC).date().toordinal()) - EPOCH
        self.n += 1
        return {"sale_id": f"{self.run}-{self.n}",
                "customer_id": customer or rng.randint(1, self.customers),
                "store_id": store, "product_name": name, "sales_date": day,
                "sales_person_id": people[rng.randrange(len(people))],
                "price": _wire(cents), "quantity": quantity, "total_cost": _wire(cents * quantity)}


def _wire(cents: int) -> bytes:
    return cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)


class Sender:
    """Sends the flow at a steady rate; remembers when each probe sale left."""

    TICK = 0.05

    def __init__(self, settings: Settings, flow: Flow, shape: str) -> None:
        self.settings, self.flow, self.shape = settings, flow, shape
        self.topic = Topics(settings.namespace).sales
        self.codec = Codec()
        self.producer = Producer(client_config(settings, **{
            "linger.ms": 5, "enable.idempotence": True, "acks": "all",
            "queue.buffering.max.kbytes": 262144}))
        self.probe_sends: dict[int, list[float]] = {}  # probe customer -> send times
        self.sent = 0
        self.behind = 0.0  # the largest lag of the sender behind its schedule (s)

    def send(self, sales: list[dict]) -> None:
        by_partition: dict[int, list[dict]] = {}
        for s in sales:
            by_partition.setdefault(partition_for(s["sale_id"], self.settings.partitions),
                                    []).append(s)
        for p, part in by_partition.items():
            if self.shape == "packed":
                self._produce(self.codec.encode("sale_batch", {"sales": part}), p, None)
            else:
                for s in part:
                    self._produce(self.codec.encode("sale", s), p, s["sale_id"].encode())
        self.producer.poll(0)
        self.sent += len(sales)

    def _produce(self, value: bytes, partition: int, key: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.01)

    def run(self, rate: float, seconds: float, probes: list[int], probe_every: float,
            flow: Flow) -> None:
        started = time.monotonic()
        next_probe, owed, tick, k = started, 0.0, 0, 0
        while (now := time.monotonic()) < started + seconds:
            owed += rate * self.TICK
            count = int(owed)
            owed -= count
            sales = [flow.sale() for _ in range(count)]
            probe_at = None
            if now >= next_probe:
                customer = probes[k % len(probes)]
                k += 1
                sales.insert(random.randrange(len(sales) + 1), flow.sale(customer))
                probe_at = customer
                next_probe += probe_every
            sent_at = time.time()
            self.send(sales)
            if probe_at is not None:
                self.probe_sends.setdefault(probe_at, []).append(sent_at)
            tick += 1
            wake = started + tick * self.TICK
            self.behind = max(self.behind, time.monotonic() - wake)
            time.sleep(max(0.0, wake - time.monotonic()))
        self.producer.flush(60)


class Observer(threading.Thread):
    """Polls the probe customers' purchase counts: when the n-th probe of a customer shows,
    the probes up to n are reflected."""

    def __init__(self, url: str, probes: list[int], poll: float) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url)
        self.probes, self.poll = probes, poll
        self.seen: dict[int, list[float]] = {p: [] for p in probes}  # when each count showed
        self.stopping = threading.Event()
        lo, hi = min(probes), max(probes)
        self.query = sa.text("SELECT customer_id, MAX(purchase_frequency) FROM "
                             f"customers_data_mart WHERE customer_id BETWEEN {lo} AND {hi} "
                             "GROUP BY customer_id")

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(self.query).all()
            except sa.exc.SQLAlchemyError:
                rows = []
            now = time.time()
            for customer, count in rows:
                seen = self.seen[customer]
                while len(seen) < count:
                    seen.append(now)
            time.sleep(self.poll)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_once(args: argparse.Namespace, rate: int, shape: str, workdir: Path) -> dict:
    run_id = uuid.uuid4().hex[:8]
    server = sa.make_url(args.db)
    database = f"bench_fresh_{run_id}"
    engine = sa.create_engine(server.set(database=None))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    url = server.set(database=database).render_as_string(hide_password=False)
    settings = Settings(namespace=f"fresh{run_id}", mart_db_url=url)
    probes = list(range(args.customers + 1, args.customers + 1 + args.probes))
    processes: list[Process] = []
    try:
        data = workdir / f"dims-{run_id}"
        write_dimensions(data, GenerateSpec(rows=1, customers=args.customers + args.probes))
        ensure_topics(settings)
        produce_dims(settings, data)
        for i in range(args.workers):
            processes.append(Process(settings, workdir, f"{run_id}-stream{i}",
                                     ["stream", "--loglevel", "info"], "stream worker ready",
                                     args.interval))
        follower = Process(settings, workdir, f"{run_id}-follow",
                           ["marts", "follow", "--loglevel", args.follower_log],
                           "mart follower ready", args.interval)
        processes.append(follower)
        for p in processes:
            p.wait_ready()
        flow = Flow(args.customers, args.spread)
        if args.history:
            history = Flow(args.customers, True)
            sender = Sender(settings, history, "packed")
            for start in range(0, args.history, 5000):
                sender.send([history.sale() for _ in range(min(5000, args.history - start))])
            sender.producer.flush(120)
            deadline = time.monotonic() + 600
            while (metric(follower.metrics(), "salesflow_mart_freshness_seconds") or 1e9) > 30:
                if time.monotonic() > deadline:
                    raise SystemExit("the history never reached the marts")
                time.sleep(1)
        observer = Observer(url, probes, args.poll)
        observer.start()
        freshness: list[float] = []
        scraping = threading.Event()

        def scrape() -> None:
            while not scraping.is_set():
                value = metric(follower.metrics(), "salesflow_mart_freshness_seconds")
                if value is not None and value == value:  # not NaN
                    freshness.append(value)
                time.sleep(1)

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        sender = Sender(settings, flow, shape)
        sender.run(rate, args.seconds, probes, args.probe_every, flow)
        deadline = time.monotonic() + 120
        expected = {p: len(t) for p, t in sender.probe_sends.items()}
        while any(len(observer.seen[p]) < n for p, n in expected.items()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        observer.stopping.set()
        scraping.set()
        latencies = [seen - sent for p, sends in sender.probe_sends.items()
                     for sent, seen in zip(sends, observer.seen[p], strict=False)]
        missing = sum(expected.values()) - len(latencies)
        text = follower.metrics()
        flushes = metric(text, "salesflow_mart_flush_duration_seconds_count") or 0
        flush_sum = metric(text, "salesflow_mart_flush_duration_seconds_sum") or 0
        return {
            "rate": rate, "shape": shape, "sent": sender.sent, "probes": len(latencies),
            "missing": missing, "p50": percentile(latencies, 0.5) if latencies else None,
            "p95": percentile(latencies, 0.95) if latencies else None,
            "max": max(latencies) if latencies else None,
            "gauge_p95": percentile(freshness, 0.95) if freshness else None,
            "gauge_max": max(freshness) if freshness else None,
            "flushes": flushes, "flush_mean": flush_sum / flushes if flushes else None,
            "sender_behind": sender.behind,
            "mean": statistics.mean(latencies) if latencies else None,
        }
    finally:
        for p in processes:
            p.stop()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        engine.dispose()
        try:
            delete_namespace(settings, wait=False)
        except Exception as exc:  # best effort
            print(f"could not delete the topics of {settings.namespace}: {exc}",
                  file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, action="append", help="sales/s (repeatable)")
    parser.add_argument("--shape", action="append", choices=("packed", "single"))
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=2, help="stream workers")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="SALESFLOW_FLUSH_INTERVAL_SECONDS")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--spread", action="store_true",
                        help="date the flow's sales over 2024-2025, not today")
    parser.add_argument("--history", type=int, default=0,
                        help="sales sent (spread over 2024-2025) before the measured flow")
    parser.add_argument("--probes", type=int, default=20, help="probe customers")
    parser.add_argument("--probe-every", type=float, default=0.1, help="seconds")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls")
    parser.add_argument("--follower-log", default="info", help="the follower's log level")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the processes' logs in this folder")
    parser.add_argument("--db", default="mysql+pymysql://root@127.0.0.1:3306",
                        help="MySQL/MariaDB server URL (a database is created per run)")
    args = parser.parse_args()
    rates, shapes = args.rate or [1000, 5000], args.shape or ["packed", "single"]
    print(f"flush interval {args.interval:g}s, {args.workers} stream worker(s), "
          f"{args.customers:,} customers, sales dated "
          f"{'over 2024-2025' if args.spread else 'today'}, history {args.history:,} sales; "
          f"{args.seconds:g}s per run; p50/p95/max from send to the mart row (s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="salesflow-fresh-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for rate in rates:
            for shape in shapes:
                r = run_once(args, rate, shape, workdir)
                verdict = ("<=" if r["p95"] is not None and r["p95"] <= args.interval + 2
                           else ">")
                print(f"{rate:6,}/s {shape:6}  p50 {_s(r['p50'])}  p95 {_s(r['p95'])}  "
                      f"max {_s(r['max'])}  (p95 {verdict} interval + 2 s; {r['probes']} "
                      f"probes, {r['missing']} missing; {r['sent']:,} sales sent, the sender "
                      f"at most {r['sender_behind']:.2f}s behind)  gauge p95 "
                      f"{_s(r['gauge_p95'])} max {_s(r['gauge_max'])}; {r['flushes']:.0f} "
                      f"flushes of {_s(r['flush_mean'])}s on average", flush=True)


def _s(v: float | None) -> str:
    return "   -  " if v is None else f"{v:6.2f}"

if __name__ == "__main__":
    main()
