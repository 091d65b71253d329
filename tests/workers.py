"""Real `salesflow stream` and `salesflow marts follow` processes for integration tests
(start, wait, stop, kill), and readers of the stream app's state topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from salesflow.codec import Codec
from salesflow.kafka import read_all, wait_for_group
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
)
from salesflow.topics import Topics

READY_LINE = "stream worker ready"


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a worker process use `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
    env.update({
        "SALESFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SALESFLOW_NAMESPACE": settings.namespace,
        "SALESFLOW_MART_DB_URL": settings.mart_db_url,
        "SALESFLOW_METRICS_PORT": str(settings.metrics_port),
        "SALESFLOW_FLUSH_INTERVAL_SECONDS": str(settings.flush_interval_seconds),
        "SALESFLOW_UNKNOWN_REF_RETRY_SECONDS": str(settings.unknown_ref_retry_seconds),
        "SALESFLOW_PARTITIONS": str(settings.partitions),
    })
    env.update(extra)
    return env


class StreamWorker:
    """One `salesflow stream` process; its log goes to a file for post-mortems."""

    ARGS: tuple[str, ...] = ("stream", "--loglevel", "info")
    READY = READY_LINE

    def __init__(self, settings: Settings, log_dir: Path, name: str = "worker",
                 **env: str) -> None:
        self.settings = settings
        self.log_path = log_dir / f"{name}.log"
        self.env = worker_env(settings, **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, wait: float = 90.0) -> StreamWorker:
        self._starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self._starts} ===\n".encode())
        log.flush()
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "salesflow_cli", *self.ARGS],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.log_path.parent,
            start_new_session=True)
        if wait:
            try:
                self.wait_ready(wait)
            except BaseException:
                self.kill()  # a `with` whose start failed never reaches __exit__
                raise
        return self

    def log_text(self, since_start: bool = True) -> str:
        data = self.log_path.read_bytes()
        return data[self._offset:].decode("utf-8", "replace") if since_start \
            else data.decode("utf-8", "replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.READY in self.log_text():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit — the crash the design must survive."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> StreamWorker:
        return self.start() if self.proc is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()


class MartFollower(StreamWorker):
    """One `salesflow marts follow` process (flushes every SALESFLOW_FLUSH_INTERVAL_SECONDS)."""

    ARGS = ("marts", "follow")
    READY = "mart follower ready"


def wait_until_processed(settings: Settings, timeout: float = 120.0) -> None:
    """Until the stream app's group has committed every offset of the sales topic."""
    topics = Topics(settings.namespace)
    wait_for_group(settings, topics.app_id, topics.sales, timeout)


def partition_counts(settings: Settings) -> dict[int, PartitionCounts]:
    """The latest counts of every sales partition (the `counts` table's changelog)."""
    latest: dict[int, PartitionCounts] = {}
    for msg in read_all(settings, Topics(settings.namespace).changelog(COUNTS)):
        if msg.key() == COUNTS_KEY and msg.value() is not None:
            latest[msg.partition()] = PartitionCounts.decode(msg.value())
    return latest


def totals(settings: Settings) -> PartitionCounts:
    """Every partition's counts, summed."""
    out = PartitionCounts()
    for counts in partition_counts(settings).values():
        out.add(counts)
    return out


def aggregates(settings: Settings) -> tuple[list[CustomerMonth], list[TeamMonth]]:
    """The latest partial aggregates of every partition (`customers` and `team` changelogs)."""
    topics = Topics(settings.namespace)
    out: list[dict] = []
    for table, decode in ((CUSTOMERS, CustomerMonth.decode), (TEAM, TeamMonth.decode)):
        latest: dict = {}
        for msg in read_all(settings, topics.changelog(table)):
            place = (msg.partition(), msg.key())
            if msg.value() is None:
                latest.pop(place, None)
            else:
                latest[place] = decode(msg.key(), msg.value())
        out.append(latest)
    return list(out[0].values()), list(out[1].values())


def accepted_sales(settings: Settings, *, committed: bool = True) -> list[tuple[int, Sale]]:
    """Every (partition, sale) in `<ns>.sales.valid`; with `committed=False`, also those of
    aborted transactions (evidence that work was done and thrown away)."""
    codec = Codec()
    out = []
    isolation = "read_committed" if committed else "read_uncommitted"
    for msg in read_all(settings, Topics(settings.namespace).valid_sales,
                        isolation_level=isolation):
        for entry in codec.decode(msg.value()).record["messages"]:
            sales = codec.decode_sales(entry["message"]).sales
            out.extend((msg.partition(), sales[i]) for i in entry["accepted"])
    return out
