"""Stream app throughput, restarts and memory, on both input shapes, in one run.

For packed input (`SaleBatch` messages of up to 500 sales, as `produce sales` sends them) and
for one sale per message (as upstream systems send them), over the same generated sales:
(i)   a bare confluent-kafka consumer that only fetches and fastavro-decodes every message
      (the baseline: every ratio below is to this loop on the same topic, same run);
(ii)  one real `salesflow stream` worker processing the whole topic from scratch, its peak RSS;
(iii) two workers on a copy of the topic (ratio to one worker);
(iv)  restart with its state kept: the one worker stopped (SIGTERM) and started again in the
      same state folder, timed from launch to the commit of new sales sent meanwhile;
(v)   a fresh worker with an empty state folder: changelog records restored per second (from
      its log), and launch to the commit of new sales;
(vi)  with `--anomaly-cost`: one worker with SALESFLOW_ANOMALIES=false on a copy of the topic
      (the ratio with / without the anomaly rules' state).
`--rss-rows 3000000` adds a packed single-worker run at that size for the peak RSS.

A worker's rate is measured from its group's first committed offset to its last (offsets are
turned into sales exactly with the per-message sale counts the bare loop saw), and so is the
CPU time it used meanwhile (µs per sale, against the bare loop's own CPU time per sale: less
noisy than rates when other processes share the machine). Rates on a small shared machine are
noisy; the ratios are what this is for. The broker runs on the same two cores as the workers,
so two workers cannot double one worker's rate here.

    python benchmarks/stream.py [--rows 1000000] [--single-rows 200000] [--rss-rows 0]
                                [--anomaly-cost]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from producers.dims import produce_dims
from producers.generate import GenerateSpec, write_dimensions, write_sales
from producers.rows import parse_sale_row, wire_record
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.kafka import client_config, delete_namespace, ensure_topics, partition_for
from salesflow.sale import Sale
from salesflow.settings import Settings
from salesflow.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("packed", "single")


# --- input ---------------------------------------------------------------------------------


def send_single(settings: Settings, sales_csv: Path) -> int:
    """One `Sale` message per row, keyed by sale_id, on its home partition."""
    import csv

    codec, topic = Codec(), Topics(settings.namespace).sales
    ensure_topics(settings)
    producer = Producer(client_config(settings, **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 20,
        "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 20}))
    header, schema, sent = codec.header("sale"), codec.schemas["sale"], 0
    with sales_csv.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            parsed = parse_sale_row(row)
            if not isinstance(parsed, Sale):
                continue
            sale = wire_record(parsed)
            buf = io.BytesIO()
            buf.write(header)
            fastavro.schemaless_writer(buf, schema, sale)
            while True:
                try:
                    producer.produce(topic, buf.getvalue(), sale["sale_id"].encode(),
                                     partition=partition_for(sale["sale_id"],
                                                             settings.partitions))
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
    assert producer.flush(120) == 0, "sales not delivered"
    return sent


def prepare(settings: Settings, data: Path, sales: Path, shape: str) -> int:
    produce_dims(settings, data)
    if shape == "packed":
        return produce_sales(settings, [sales]).sent
    return send_single(settings, sales)


# --- (i) the bare loop -----------------------------------------------------------------------


@dataclass
class TopicShape:
    """Sales per message, by partition and offset: turns committed offsets into sales."""

    ends: dict[int, int]
    cumulative: dict[int, list[int]] = field(default_factory=dict)  # sales before offset i
    cpu_s: float = 0.0

    def sales_before(self, partition: int, offset: int) -> int:
        cum = self.cumulative.get(partition)
        if not cum or offset <= 0:
            return 0
        return cum[min(offset, len(cum) - 1)]

    @property
    def total(self) -> int:
        return sum(self.sales_before(p, end) for p, end in self.ends.items())

    @property
    def messages(self) -> int:
        return sum(self.ends.values())


def bare_loop(settings: Settings) -> tuple[float, TopicShape]:
    """Seconds to fetch and decode every message of the sales topic, and its shape (with the
    CPU seconds it used in `shape.cpu_s`)."""
    topic = Topics(settings.namespace).sales
    codec = Codec()
    consumer = Consumer(client_config(settings, **{
        "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
    md = consumer.list_topics(topic, timeout=30).topics[topic]
    ends, assign = {}, []
    for p in md.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        ends[p] = high
        if high > low:
            assign.append(TopicPartition(topic, p, low))
    counts: dict[int, dict[int, int]] = {p: {} for p in ends}
    remaining = {tp.partition for tp in assign}
    schemas = {name: codec.schemas[name] for name in ("sale", "sale_batch")}
    reader = fastavro.schemaless_reader
    started, cpu = time.perf_counter(), time.process_time()
    consumer.assign(assign)
    try:
        while remaining:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error():
                    continue
                value = msg.value()
                batch = value[2:10] == codec.header("sale_batch")[2:10]
                record = reader(io.BytesIO(value[10:]),
                                schemas["sale_batch" if batch else "sale"], None)
                p, off = msg.partition(), msg.offset()
                counts[p][off] = len(record["sales"]) if batch else 1
                if off >= ends[p] - 1:
                    remaining.discard(p)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        consumer.close()
    shape = TopicShape(ends, cpu_s=cpu)
    for p, by_offset in counts.items():
        cum = [0] * (ends[p] + 1)
        for i in range(ends[p]):
            cum[i + 1] = cum[i] + by_offset.get(i, 0)
        shape.cumulative[p] = cum
    return seconds, shape


# --- real workers ------------------------------------------------------------------------------


class Worker:
    """One `salesflow stream` process."""

    def __init__(self, settings: Settings, workdir: Path, name: str, state: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
        env.update({
            "SALESFLOW_COMMIT_INTERVAL_SECONDS": str(settings.commit_interval_seconds),
            "SALESFLOW_ANOMALIES": str(settings.anomalies).lower(),
            "SALESFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "SALESFLOW_NAMESPACE": settings.namespace,
            "SALESFLOW_METRICS_PORT": "0",
            "SALESFLOW_STATE_DIR": str(state),
            "PYTHONPATH": str(ROOT),
        })
        self.log_path = workdir / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "salesflow_cli", "stream"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=workdir, start_new_session=True)

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match
        return int(match.group(1)) / 1024

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the worker process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        """SIGTERM; returns the seconds it took to exit."""
        started = time.perf_counter()
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        return time.perf_counter() - started

    def restored(self) -> tuple[int, float]:
        """(changelog entries restored, seconds of the longest partition restore)."""
        text = self.log_path.read_text(errors="replace")
        found = re.findall(r"restored: (\d+) changelog entries in ([0-9.]+)s", text)
        return sum(int(n) for n, _ in found), max((float(s) for _, s in found), default=0.0)


class Progress:
    """The committed offsets of the stream app's group."""

    def __init__(self, settings: Settings, shape: TopicShape) -> None:
        topics = Topics(settings.namespace)
        self.shape = shape
        self.tps = [TopicPartition(topics.sales, p) for p in sorted(shape.ends)]
        self.group = Consumer(client_config(settings, **{"group.id": topics.app_id,
                                                         "enable.auto.commit": False}))

    def committed(self) -> dict[int, int]:
        return {tp.partition: max(tp.offset, 0)
                for tp in self.group.committed(self.tps, timeout=10)}

    def sales(self, committed: dict[int, int]) -> int:
        return sum(self.shape.sales_before(p, o) for p, o in committed.items())

    def close(self) -> None:
        self.group.close()


@dataclass
class Run:
    workers: int
    sales: int
    startup_s: float  # launch → first commit
    rate: float  # sales/s between the first and the last commit
    cpu_us: float  # CPU µs per sale of all workers meanwhile
    peak_rss_mb: list[float]
    stop_s: float = 0.0

    def line(self) -> str:
        rss = ", ".join(f"{r:,.0f}" for r in self.peak_rss_mb)
        return (f"{self.rate:10,.0f} sales/s, {self.cpu_us:5.1f} CPU µs/sale (startup "
                f"{self.startup_s:.1f}s; SIGTERM to exit {self.stop_s:.1f}s; peak RSS {rss} MB)")


def run_workers(settings: Settings, shape: TopicShape, count: int, workdir: Path, state: Path,
                timeout: float, keep: bool = False) -> tuple[Run, list[Worker]]:
    """`count` workers over the whole topic until every offset is committed."""
    progress = Progress(settings, shape)
    workers = [Worker(settings, workdir, f"{settings.namespace}-w{i}", state)
               for i in range(count)]
    launched = workers[0].launched
    first = None
    try:
        while True:
            time.sleep(0.2)
            now = time.perf_counter()
            if now - launched > timeout:
                raise SystemExit(f"workers did not finish within {timeout:.0f}s; logs in "
                                 f"{workdir}")
            for w in workers:
                if not w.alive():
                    raise SystemExit(f"a worker exited; see {w.log_path}")
            committed = progress.committed()
            done = progress.sales(committed)
            if first is None and done > 0:
                first = (now, done, sum(w.cpu_s() for w in workers))
            if all(committed[p] >= end for p, end in shape.ends.items()):
                break
        rss = [w.peak_rss_mb() for w in workers]
        cpu = sum(w.cpu_s() for w in workers)
    finally:
        progress.close()
    assert first is not None
    stop = 0.0
    if not keep:
        stop = max(w.stop() for w in workers)
    rate = (shape.total - first[1]) / max(1e-9, now - first[0])
    cpu_us = (cpu - first[2]) / max(1, shape.total - first[1]) * 1e6
    return Run(count, shape.total, first[0] - launched, rate, cpu_us, rss, stop), workers


def time_to_new_commit(settings: Settings, data: Path, workdir: Path, state: Path,
                       name: str) -> tuple[float, Worker]:
    """Send a few new sales, start a worker, and time launch → their commit."""
    extra = data / f"extra-{name}.csv"
    write_sales(extra, GenerateSpec(rows=500, seed=hash(name) % 1000))
    produce_sales(settings, [extra])
    _, shape = bare_loop(settings)
    progress = Progress(settings, shape)
    worker = Worker(settings, workdir, f"{settings.namespace}-{name}", state)
    try:
        while True:
            committed = progress.committed()
            if all(committed[p] >= end for p, end in shape.ends.items()):
                return time.perf_counter() - worker.launched, worker
            if not worker.alive():
                raise SystemExit(f"the worker exited; see {worker.log_path}")
            if time.perf_counter() - worker.launched > 600:
                raise SystemExit("no commit of the new sales within 600 s")
            time.sleep(0.1)
    finally:
        progress.close()


# --- driver ------------------------------------------------------------------------------------


def drop_namespace(settings: Settings) -> None:
    try:
        delete_namespace(settings, wait=False)
    except Exception as exc:  # best effort
        print(f"could not delete the topics: {exc}", file=sys.stderr)


def bench_shape(shape_name: str, rows: int, workdir: Path, timeout: float,
                restarts: bool, namespaces: list[Settings],
                commit_interval: float, anomaly_cost: bool) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:6]
    one = Settings(_env_file=None, namespace=f"bench{run_id}{shape_name[0]}1",
                   commit_interval_seconds=commit_interval)
    two = one.model_copy(update={"namespace": f"bench{run_id}{shape_name[0]}2"})
    namespaces += [one, two]
    data = workdir / f"data-{rows}"
    sales = data / "sales.csv"
    if not sales.exists():
        write_dimensions(data, GenerateSpec(rows=rows))
        write_sales(sales, GenerateSpec(rows=rows))
    sent = prepare(one, data, sales, shape_name)
    bare_s, shape = bare_loop(one)
    assert shape.total == sent, (shape.total, sent)
    bare = sent / bare_s
    print(f"\n[{shape_name}] {sent:,} sales in {shape.messages:,} messages")
    bare_cpu = shape.cpu_s / sent * 1e6
    print(f"  (i)   bare consume + decode:  {bare:10,.0f} sales/s, {bare_cpu:5.1f} CPU µs/sale",
          flush=True)
    state = workdir / f"state-{one.namespace}"
    single, _ = run_workers(one, shape, 1, workdir, state, timeout)
    print(f"  (ii)  1 worker:               {single.line()}", flush=True)
    out = {"bare": bare, "one": single.rate, "rss": single.peak_rss_mb[0]}
    prepare(two, data, sales, shape_name)
    _, shape_two = bare_loop(two)
    pair, _ = run_workers(two, shape_two, 2, workdir, workdir / f"state-{two.namespace}",
                          timeout)
    print(f"  (iii) 2 workers:              {pair.line()}", flush=True)
    out["two"] = pair.rate
    print(f"  ratio 1 worker / bare:        {single.rate / bare:10.3f} "
          f"(in CPU per sale: {bare_cpu / single.cpu_us:.3f})")
    print(f"  ratio 2 workers / 1 worker:   {pair.rate / single.rate:10.2f}")
    if anomaly_cost:
        off = one.model_copy(update={"namespace": f"bench{run_id}{shape_name[0]}0",
                                     "anomalies": False})
        namespaces.append(off)
        prepare(off, data, sales, shape_name)
        _, shape_off = bare_loop(off)
        plain, _ = run_workers(off, shape_off, 1, workdir, workdir / f"state-{off.namespace}",
                               timeout)
        print(f"  (vi)  1 worker, no anomalies: {plain.line()}", flush=True)
        print(f"  ratio with / without anomaly rules: {single.rate / plain.rate:.3f} "
              f"(in CPU per sale: {plain.cpu_us / single.cpu_us:.3f})")
        out["no_anomalies"] = plain.rate
    if restarts:
        kept, worker = time_to_new_commit(one, data, workdir, state, "restart")
        worker.stop()
        print(f"  (iv)  restart, state kept:    {kept:10.1f} s to the first new commit")
        fresh, worker = time_to_new_commit(one, data, workdir, workdir / "state-empty",
                                           "fresh")
        worker.stop()
        records, seconds = worker.restored()
        print(f"  (v)   fresh worker: restored {records:,} changelog entries in "
              f"{seconds:.1f}s ({records / max(seconds, 1e-9):,.0f}/s); {fresh:.1f} s to the "
              "first new commit")
        out |= {"restart_s": kept, "fresh_s": fresh,
                "restore_rate": records / max(seconds, 1e-9)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="packed input")
    parser.add_argument("--single-rows", type=int, default=200_000, help="single-sale input")
    parser.add_argument("--rss-rows", type=int, default=0,
                        help="also a packed one-worker run at this size, for its peak RSS")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--no-restarts", action="store_true")
    parser.add_argument("--commit-interval", type=float, default=Settings().commit_interval_seconds,
                        help="SALESFLOW_COMMIT_INTERVAL_SECONDS of the workers")
    parser.add_argument("--anomaly-cost", action="store_true",
                        help="also one worker with SALESFLOW_ANOMALIES=false (the rules' cost)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="salesflow-bench-"))
    namespaces: list[Settings] = []
    results = {}
    try:
        for shape in args.shapes:
            rows = args.rows if shape == "packed" else args.single_rows
            results[shape] = bench_shape(shape, rows, workdir, args.timeout,
                                         not args.no_restarts, namespaces,
                                         args.commit_interval, args.anomaly_cost)
        if args.rss_rows:
            big = Settings(_env_file=None, namespace=f"bench{uuid.uuid4().hex[:6]}rss")
            namespaces.append(big)
            data = workdir / f"data-{args.rss_rows}"
            write_dimensions(data, GenerateSpec(rows=args.rss_rows))
            write_sales(data / "sales.csv", GenerateSpec(rows=args.rss_rows))
            prepare(big, data, data / "sales.csv", "packed")
            _, shape_big = bare_loop(big)
            run, _ = run_workers(big, shape_big, 1, workdir, workdir / "state-rss",
                                 args.timeout)
            print(f"\n[packed, {args.rss_rows:,}] 1 worker: {run.line()}")
            if "packed" in results:
                print(f"  peak RSS {args.rss_rows:,} / {args.rows:,}: "
                      f"{run.peak_rss_mb[0] / results['packed']['rss']:.2f}")
    except BaseException:
        print(f"worker logs kept in {workdir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    finally:
        for s in namespaces:
            drop_namespace(s)


if __name__ == "__main__":
    main()
