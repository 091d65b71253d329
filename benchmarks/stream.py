"""Stream app throughput: a bare consume + decode loop vs one and two `salesflow stream` workers.

All three read the same generated sales (packed SaleBatch messages, as `produce sales` sends
them) from the broker:
(i)   a bare confluent-kafka consumer that only fetches and fastavro-decodes every message;
(ii)  one real `salesflow stream` worker processing the whole topic from scratch;
(iii) two workers (their own namespace, so their own topics and state).
A worker's rate is measured from its group's first committed offset to its last (commits are
turned into sales exactly with the per-message sale counts the bare loop saw), and cross-checked
with the workers' `salesflow_stream_records_in_total` counters. Peak RSS (VmHWM) of the single
worker is read from /proc before it stops.

    python benchmarks/stream.py [--rows 1000000] [--single-only] [--profile /tmp/profile.txt]

Rates on a small shared machine are noisy; the ratios are what this is for. The broker runs on
the same cores as the workers, so two workers cannot double one worker's rate on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fastavro
from confluent_kafka import Consumer, TopicPartition

from producers.dims import produce_dims
from producers.generate import GenerateSpec, write_dimensions, write_sales
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.kafka import client_config, delete_namespace
from salesflow.settings import Settings
from salesflow.topics import Topics

ROOT = Path(__file__).resolve().parent.parent


# --- (i) the bare loop -------------------------------------------------------------------------


@dataclass
class TopicShape:
    """Sales per message, by partition and offset: turns committed offsets into sales."""

    ends: dict[int, int]
    cumulative: dict[int, list[int]] = field(default_factory=dict)  # sales before offset i

    def sales_before(self, partition: int, offset: int) -> int:
        cum = self.cumulative.get(partition)
        if not cum or offset <= 0:
            return 0
        return cum[min(offset, len(cum) - 1)]

    @property
    def total(self) -> int:
        return sum(self.sales_before(p, end) for p, end in self.ends.items())


def bare_loop(settings: Settings) -> tuple[float, TopicShape]:
    """Seconds to fetch and decode every message of the sales topic, and its shape."""
    topic = Topics(settings.namespace).sales
    schema = Codec().schemas["sale_batch"]
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
    reader = fastavro.schemaless_reader
    started = time.perf_counter()
    consumer.assign(assign)
    try:
        while remaining:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error():
                    continue
                value = msg.value()
                record = reader(io.BytesIO(value[10:]), schema, None)
                p, off = msg.partition(), msg.offset()
                counts[p][off] = len(record["sales"])
                if off >= ends[p] - 1:
                    remaining.discard(p)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    shape = TopicShape(ends)
    for p, by_offset in counts.items():
        cum = [0] * (ends[p] + 1)
        for i in range(ends[p]):
            cum[i + 1] = cum[i] + by_offset.get(i, 0)
        shape.cumulative[p] = cum
    return seconds, shape


# --- (ii) and (iii): real workers --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """One `salesflow stream` process with its own metrics port."""

    def __init__(self, settings: Settings, workdir: Path, name: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
        env.update({
            "SALESFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "SALESFLOW_NAMESPACE": settings.namespace,
            "SALESFLOW_MART_DB_URL": f"sqlite:///{workdir / f'{settings.namespace}.db'}",
            "SALESFLOW_METRICS_PORT": str(self.port),
            "SALESFLOW_PARTITIONS": str(settings.partitions),
            "PYTHONPATH": str(ROOT),
        })
        self.log = (workdir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "salesflow_cli", "stream", "--loglevel", "info"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
            start_new_session=True)

    def records_in(self) -> float:
        """The worker's `salesflow_stream_records_in_total` (0 until its metrics answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        m = re.search(r"^salesflow_stream_records_in_total (\S+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))
        return kb / 1024

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@dataclass
class Run:
    workers: int
    sales: int
    startup_s: float  # launch → first commit
    commit_rate: float  # sales/s between the first and the last commit
    counter_rate: float  # sales/s from the records-in counters
    peak_rss_mb: list[float]
    stalled: str = ""  # why the run ended before everything was committed, if it did

    def line(self) -> str:
        rss = ", ".join(f"{r:,.0f}" for r in self.peak_rss_mb)
        text = (f"{self.commit_rate:10,.0f} sales/s (counters {self.counter_rate:,.0f}/s; "
                f"startup {self.startup_s:.1f}s; peak RSS {rss} MB)")
        return text + (f"\n      STALLED: {self.stalled}" if self.stalled else "")


def run_workers(settings: Settings, shape: TopicShape, count: int, workdir: Path,
                timeout: float, profile: Path | None = None,
                profile_seconds: float = 20.0, stall_seconds: float = 30.0) -> Run:
    """Run `count` workers over the whole topic; stop when every offset is committed, or when
    nothing moved for `stall_seconds` (after a rebalance Faust 0.15 can skip prefetched
    messages and then never commit past them: the rate is then taken up to the stall)."""
    topics = Topics(settings.namespace)
    tps = [TopicPartition(topics.sales, p) for p in sorted(shape.ends)]
    group = Consumer(client_config(settings, **{"group.id": topics.app_id,
                                                "enable.auto.commit": False}))
    launched = time.perf_counter()
    workers = [Worker(settings, workdir, f"{settings.namespace}-w{i}") for i in range(count)]
    total = shape.total
    first_commit = first_in = None
    counter_done_at = None
    spy = None
    stalled = ""
    moved_at, last_seen = time.perf_counter(), (-1.0, -1)
    seen_in, next_scrape = 0.0, 0.0
    try:
        while True:
            time.sleep(0.2)
            now = time.perf_counter()
            if now - launched > timeout:
                raise SystemExit(f"workers did not finish within {timeout:.0f}s; "
                                 f"logs in {workdir}")
            for w in workers:
                if not w.alive():
                    raise SystemExit(f"a worker exited; see {w.log.name}")
            if now >= next_scrape:  # each scrape costs the worker CPU: once a second
                seen_in = sum(w.records_in() for w in workers)
                next_scrape = now + 1.0
            if first_in is None and seen_in > 0:
                first_in = (now, seen_in)
            if counter_done_at is None and seen_in >= total:
                counter_done_at = (now, seen_in)
            committed = group.committed(tps, timeout=10)
            done = sum(shape.sales_before(tp.partition, tp.offset) for tp in committed)
            if first_commit is None and done > 0:
                first_commit = (now, done)
                if profile is not None:
                    spy = start_profile(workers[0].proc.pid, profile, profile_seconds)
            if all(tp.offset >= shape.ends[tp.partition] for tp in committed):
                last_commit = now
                break
            if (seen_in, done) != last_seen:
                moved_at, last_seen, last_commit = now, (seen_in, done), now
            elif first_commit is not None and now - moved_at > stall_seconds:
                behind = {tp.partition: shape.ends[tp.partition] - tp.offset for tp in committed
                          if tp.offset < shape.ends[tp.partition]}
                stalled = (f"nothing moved for {stall_seconds:.0f}s; {total - done:,} sales "
                           f"uncommitted (messages behind per partition: {behind}); "
                           f"records-in counters {seen_in:,.0f} of {total:,}")
                counter_done_at = counter_done_at or (moved_at, seen_in)
                last_commit = moved_at
                break
        if counter_done_at is None:  # the counters are scraped less often than commits
            counter_done_at = (time.perf_counter(), sum(w.records_in() for w in workers))
        rss = [w.peak_rss_mb() for w in workers]
    finally:
        group.close()
        if spy is not None:
            spy.wait()
        for w in workers:
            w.stop()
    assert first_commit is not None and first_in is not None and counter_done_at is not None
    committed_sales = last_seen[1] if stalled else total
    commit_rate = (committed_sales - first_commit[1]) / max(1e-9, last_commit - first_commit[0])
    counter_rate = (counter_done_at[1] - first_in[1]) / max(1e-9,
                                                            counter_done_at[0] - first_in[0])
    return Run(count, total, first_commit[0] - launched, commit_rate, counter_rate, rss,
               stalled)


# --- profiling ---------------------------------------------------------------------------------


def start_profile(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed (pip install py-spy); no profile", file=sys.stderr)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "100", "--format", "raw", "--nonblocking", "--threads",
                             "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def summarise_profile(path: Path, seconds: float, rate: int = 100, top: int = 15) -> None:
    """Where the worker's time goes, from py-spy's collapsed stacks (busy samples only)."""
    own_fn: Counter[str] = Counter()
    own_pkg: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count, frames = int(n), stack.split(";")
        if frames[0].startswith("thread"):
            threads[frames.pop(0).split(": ", 1)[-1]] += count
        if not frames:
            continue
        total += count
        name, module = _frame(frames[-1])
        own_fn[f"{name} ({module})"] += count
        own_pkg[module.split("/", 1)[0]] += count
        for f in {_frame(f) for f in frames}:
            if f[1].split("/", 1)[0] in PROJECT_PACKAGES:
                ours[f"{f[0]} ({f[1]})"] += count
    ticks = seconds * rate
    print(f"\nprofile: {total} busy samples over {seconds:.0f}s at {rate}/s ({path})")
    print("  busy share of wall time, by thread:")
    for name, n in threads.most_common(5):
        print(f"  {100 * n / ticks:5.1f}%  {name}")
    print("  own time by package (share of busy samples):")
    for name, n in own_pkg.most_common(12):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("  own time by function:")
    for name, n in own_fn.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("  inclusive time of the project's functions:")
    for name, n in ours.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


PROJECT_PACKAGES = {"stream_app", "salesflow", "mart_builder", "producers"}


def _frame(frame: str) -> tuple[str, str]:
    """`func (faust/agents/agent.py:698)` → (`func`, `faust/agents/agent.py`)."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    return (m.group(1), m.group(2)) if m else (frame, "?")


# --- driver ------------------------------------------------------------------------------------


def prepare(settings: Settings, data: Path, sales: Path) -> int:
    produce_dims(settings, data)
    return produce_sales(settings, [sales]).sent


def drop_namespace(settings: Settings) -> None:
    try:
        delete_namespace(settings, wait=False)
    except Exception as exc:  # best effort
        print(f"could not delete the topics: {exc}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--single-only", action="store_true",
                        help="only the one-worker run (e.g. for the peak RSS at 3M)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the single worker into this file (raw format); "
                             "this perturbs the single worker's rate")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's topics")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    one = Settings(namespace=f"bench{run_id}a")
    two = Settings(namespace=f"bench{run_id}b")
    workdir = Path(tempfile.mkdtemp(prefix="salesflow-bench-"))
    data = workdir / "data"
    write_dimensions(data, GenerateSpec(rows=args.rows))
    sales = data / "sales.csv"
    write_sales(sales, GenerateSpec(rows=args.rows))
    try:
        sent = prepare(one, data, sales)
        bare_s, shape = bare_loop(one)
        print(f"rows {args.rows}: {sent} sales in {sum(shape.ends.values())} messages "
              f"on {Topics(one.namespace).sales}")
        assert shape.total == sent, (shape.total, sent)
        bare = sent / bare_s
        print(f"(i)   bare consume + fastavro decode:  {bare:10,.0f} sales/s "
              f"({bare_s:.1f}s)", flush=True)

        single = run_workers(one, shape, 1, workdir, args.timeout, args.profile,
                             args.profile_seconds)
        print(f"(ii)  1 worker:                        {single.line()}", flush=True)
        pair = None
        if not args.single_only:
            prepare(two, data, sales)
            _, shape_two = bare_loop(two)  # the same messages; counted again to be sure
            pair = run_workers(two, shape_two, 2, workdir, args.timeout)
            print(f"(iii) 2 workers:                       {pair.line()}", flush=True)
        print(f"ratio 1 worker / bare:                 {single.commit_rate / bare:10.3f}")
        if pair is not None:
            print(f"ratio 2 workers / 1 worker:            "
                  f"{pair.commit_rate / single.commit_rate:10.2f}")
        if args.profile is not None and args.profile.exists():
            summarise_profile(args.profile, args.profile_seconds)
    except BaseException:
        print(f"worker logs kept in {workdir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not args.keep:
            for s in (one, two):
                drop_namespace(s)


if __name__ == "__main__":
    main()
