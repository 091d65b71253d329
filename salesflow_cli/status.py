"""`salesflow status`: are we keeping up, and does every record add up?

Counts come from the stream app's `counts` table changelog (`salesflow.tables.PartitionCounts`,
exact across crashes: written in the same transactions as everything they count); the rate is
the difference between the newest counts and those of a minute before (the changelog keeps
its recent records). Live workers come from the consumer group `<ns>-stream`, lag from its
committed offsets, parked sales from the `parked` changelog, producer-side dead letters from
`<ns>.sales.dlq`, flush times and row counts from the mart database (read only: status never
creates or migrates anything).

Kafka is asked first and for at most `KAFKA_TIMEOUT` seconds: when it does not answer, the
report says so in one line (with `--json`, as JSON) and the exit code is non-zero.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape

from salesflow.counts import counts_history
from salesflow.errors import DependencyUnavailable, SalesflowError
from salesflow.settings import Settings
from salesflow.tables import COUNTS, PARKED, Parked, PartitionCounts
from salesflow.topics import Topics

KAFKA_TIMEOUT = 8.0
RATE_WINDOW_SECONDS = 60.0
MAX_SALES_PER_MESSAGE = 500  # the producer's default packing (`produce sales --batch-size`)


@dataclass
class Worker:
    """One live member of the stream app's consumer group."""

    client_id: str
    host: str
    partitions: list[int]


@dataclass
class Status:
    namespace: str = ""
    time: str = ""
    broker: str = ""
    database: str = ""
    topics: dict[str, str] = field(default_factory=dict)
    records_in: int = 0
    accepted: int = 0
    exact_replays: int = 0
    pending: int = 0
    rerouted: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    lag_sales: int = 0
    lag_sales_estimated: bool = True
    in_per_second: float | None = None
    accepted_per_second: float | None = None
    catch_up_seconds: float | None = None
    newest_sale_at: str | None = None
    workers: list[Worker] = field(default_factory=list)
    group_state: str = ""
    worker_ever_ran: bool = False
    first_dead_letter_due: str | None = None
    producer_dead_lettered: dict[str, int] = field(default_factory=dict)
    stream_letters_on_dlq: int = 0
    dimension_letters_on_dlq: int = 0
    last_flush: dict[str, Any] | None = None
    last_flush_age_seconds: float | None = None
    last_flush_error: dict[str, Any] | None = None  # newest failed flush: finished_at, error
    quarantined: dict[str, int] = field(default_factory=dict)  # refused mart rows, per mart
    mart_rows: dict[str, int] = field(default_factory=dict)
    kafka_error: str | None = None
    database_error: str | None = None
    namespace_has_topics: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def reconciled(self) -> bool:
        """`in = accepted + replays + dead-lettered + waiting`."""
        return self.records_in == (self.accepted + self.exact_replays +
                                   self.dead_lettered_total + self.pending)

    @property
    def dlq_matches(self) -> bool:
        """The stream's own dead letters on the topic equal what its counts say."""
        return self.stream_letters_on_dlq == self.dead_lettered_total

    @property
    def healthy(self) -> bool:
        """Kafka and the database answered, and the namespace exists."""
        return (self.kafka_error is None and self.database_error is None
                and self.namespace_has_topics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"dead_lettered_total": self.dead_lettered_total,
                               "reconciled": self.reconciled, "dlq_matches": self.dlq_matches,
                               "healthy": self.healthy}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, indent=2)


# --- pure: what the numbers mean ---------------------------------------------------------------


def rate(history: dict[int, list[tuple[float, PartitionCounts]]], now: float,
         window: float = RATE_WINDOW_SECONDS) -> tuple[float, float] | None:
    """(in, accepted) per second over the last `window` seconds, from each partition's
    timestamped counts; None when no partition has any."""
    if not any(history.values()):
        return None
    d_in = d_acc = 0
    for records in history.values():
        if not records:
            continue
        newest = records[-1][1]
        before = [c for t, c in records if t <= now - window]
        base = before[-1] if before else PartitionCounts()
        if not before and records[0][0] <= now - window:
            base = records[0][1]
        d_in += (newest.records_in + newest.rerouted) - (base.records_in + base.rerouted)
        d_acc += newest.accepted - base.accepted
    return max(0, d_in) / window, max(0, d_acc) / window


def sales_lag(lag: dict[int, int], processed_messages: dict[int, int],
              counts: dict[int, PartitionCounts]) -> tuple[int, bool]:
    """Sales still to process, from the messages still to process: each partition's own
    sales per message so far (or the whole topic's), else the producer's packing of 500.
    Returns (sales, estimated)."""
    total_msgs = sum(processed_messages.values())
    total_sales = sum(c.records_in + c.rerouted for c in counts.values())
    overall = total_sales / total_msgs if total_msgs else MAX_SALES_PER_MESSAGE
    sales = 0.0
    for partition, behind in lag.items():
        done = processed_messages.get(partition, 0)
        c = counts.get(partition)
        per = (c.records_in + c.rerouted) / done if c is not None and done else overall
        sales += behind * per
    return round(sales), True


def catch_up(lag_sales: int, in_rate: float | None) -> float | None:
    """Seconds to work off the lag at the current rate (None: not moving, or nothing to do)."""
    if not lag_sales:
        return 0.0
    if not in_rate:
        return None
    return lag_sales / in_rate


def settings_debug() -> bool:
    import logging

    return logging.getLogger().isEnabledFor(logging.DEBUG)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- Kafka and database I/O ---------------------------------------------------------------------


def parked_first_seen(settings: Settings) -> float | None:
    """When the oldest sale still waiting for a dimension first arrived."""
    from salesflow.kafka import read_all

    live: dict[tuple[int, bytes], float] = {}
    for msg in read_all(settings, Topics(settings.namespace).changelog(PARKED)):
        place = (msg.partition(), msg.key())
        if msg.value() is None:
            live.pop(place, None)
        else:
            live[place] = Parked.decode(msg.value()).first_seen
    return min(live.values(), default=None)


def topic_names(settings: Settings) -> set[str]:
    """Every topic on the cluster (one metadata request)."""
    from confluent_kafka import KafkaException

    from salesflow.errors import KafkaUnavailable
    from salesflow.kafka import admin

    try:
        return set(admin(settings).list_topics(timeout=KAFKA_TIMEOUT).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap} "
                               f"within {KAFKA_TIMEOUT:.0f}s") from exc


def _workers(settings: Settings, group: str) -> tuple[str, list[Worker]]:
    from salesflow.kafka import admin

    client = admin(settings)  # must outlive its futures
    futures = client.describe_consumer_groups([group], request_timeout=KAFKA_TIMEOUT)
    described = futures[group].result(timeout=KAFKA_TIMEOUT)
    workers = []
    for m in described.members:
        parts = sorted(tp.partition for tp in (m.assignment.topic_partitions
                                               if m.assignment else [])
                       if tp.topic == Topics(settings.namespace).sales)
        workers.append(Worker(m.client_id, m.host.lstrip("/"), parts))
    state = getattr(described.state, "name", str(described.state)).lower()
    return state, sorted(workers, key=lambda w: (w.partitions[:1], w.host))


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """Offsets committed by `group` on `topic` (partitions without a commit: 0)."""
    from confluent_kafka import Consumer, TopicPartition

    from salesflow.kafka import client_config

    consumer = Consumer(client_config(settings, **{"group.id": group,
                                                    "enable.auto.commit": False}))
    try:
        md = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT).topics[topic]
        tps = [TopicPartition(topic, p) for p in md.partitions]
        return {tp.partition: max(0, tp.offset)
                for tp in consumer.committed(tps, timeout=KAFKA_TIMEOUT)}
    finally:
        consumer.close()


def _letters(settings: Settings, status: Status) -> None:
    from stream_app.dlq import is_producer_side, read_letters

    status.topics["sales"]
    producer: Counter[str] = Counter()
    for letter in read_letters(settings):
        dead = letter.dead
        if is_producer_side(dead):
            producer[dead.reason.value] += 1
        elif dead.source in Topics(settings.namespace).dims.values():
            status.dimension_letters_on_dlq += 1
        else:
            status.stream_letters_on_dlq += 1
    status.producer_dead_lettered = dict(sorted(producer.items()))


def _database(settings: Settings, status: Status) -> None:
    """Last flush and row counts, read only: a missing SQLite file or missing tables are
    reported, never created."""
    import sqlalchemy as sa

    from mart_builder.db import database_url, make_engine, translate_errors
    from mart_builder.writer import MartWriter

    url = database_url(settings)
    status.database = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        from pathlib import Path

        if not Path(url.database).exists():
            status.notes.append(f"no marts database at {Path(url.database).resolve()} yet "
                                "(`salesflow marts follow` creates it)")
            return
    engine = make_engine(settings)
    try:
        with translate_errors(engine, "connecting"), engine.connect() as conn:
            present = sa.inspect(conn).has_table("salesflow_flush_log")
        if not present:
            status.notes.append("the marts database has no salesflow tables yet "
                                "(`salesflow marts follow` creates them)")
            return
        writer = MartWriter(engine)
        status.last_flush = writer.last_run("flush")
        if status.last_flush:
            finished = status.last_flush["finished_at"]
            status.last_flush_age_seconds = time.time() - finished.replace(
                tzinfo=UTC).timestamp()
        failure = writer.last_run("failure")
        if failure:
            status.last_flush_error = {"finished_at": failure["finished_at"],
                                       "error": failure["error"]}
        for entry in writer.quarantined():
            status.quarantined[entry["mart"]] = status.quarantined.get(entry["mart"], 0) + 1
        status.mart_rows = writer.row_counts()
    except SalesflowError as exc:
        status.database_error = str(exc)
    finally:
        engine.dispose()


def collect(settings: Settings) -> Status:
    """Everything `salesflow status` shows; dependency errors are recorded, not raised."""
    from salesflow.kafka import check_reachable, group_lag

    topics = Topics(settings.namespace)
    now = time.time()
    status = Status(namespace=settings.namespace, time=utc(now), broker=settings.kafka_bootstrap,
                    topics={"sales": topics.sales, "dlq": topics.dlq,
                            "valid_sales": topics.valid_sales,
                            "counts": topics.changelog(COUNTS), "group": topics.app_id})
    try:
        _database(settings, status)
    except SalesflowError as exc:
        status.database_error = str(exc)
    try:
        check_reachable(settings, timeout=KAFKA_TIMEOUT)
        names = topic_names(settings)
    except DependencyUnavailable as exc:
        status.kafka_error = str(exc)
        return status
    if not any(topics.owns(n) for n in names):
        status.namespace_has_topics = False
        others = sorted(n[:-len(".sales")] for n in names if n.endswith(".sales"))
        status.notes.append(
            f"namespace {settings.namespace!r} has no topics on {settings.kafka_bootstrap}: "
            "nothing was produced or streamed in it (check SALESFLOW_NAMESPACE"
            + (f"; namespaces there: {', '.join(others)}" if others else "") + ")")
        return status
    status.worker_ever_ran = topics.changelog(COUNTS) in names
    try:
        status.group_state, status.workers = _workers(settings, topics.app_id)
        if status.worker_ever_ran:
            history = counts_history(settings)
            latest = {p: h[-1][1] for p, h in history.items() if h}
            totals = PartitionCounts()
            for c in latest.values():
                totals.add(c)
            status.records_in, status.accepted = totals.records_in, totals.accepted
            status.exact_replays, status.pending = totals.replays, totals.waiting
            status.rerouted = totals.rerouted
            status.dead_lettered = {k: v for k, v in sorted(totals.dead_lettered.items()) if v}
            if totals.newest_ms:
                status.newest_sale_at = utc(totals.newest_ms / 1000)
            rates = rate(history, now)
            if rates:
                status.in_per_second, status.accepted_per_second = rates
            if status.pending:
                first = parked_first_seen(settings)
                if first is not None:
                    status.first_dead_letter_due = utc(first +
                                                       settings.unknown_ref_retry_seconds)
        else:
            latest = {}
        if topics.sales in names:
            status.lag = group_lag(settings, topics.app_id, topics.sales, timeout=KAFKA_TIMEOUT)
            committed = _committed(settings, topics.app_id, topics.sales)
            status.lag_sales, status.lag_sales_estimated = sales_lag(status.lag, committed,
                                                                     latest)
            status.catch_up_seconds = catch_up(status.lag_sales, status.in_per_second)
        if topics.dlq in names:
            _letters(settings, status)
    except DependencyUnavailable as exc:
        status.kafka_error = str(exc)
    except Exception as exc:  # confluent_kafka.KafkaException from the admin calls
        if settings_debug():
            raise
        status.kafka_error = f"Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}"
    if not status.worker_ever_ran:
        status.notes.append(f"no worker has run in namespace {settings.namespace!r} yet; "
                            "start `salesflow stream`")
    elif not status.workers:
        status.notes.append(f"no worker is running in namespace {settings.namespace!r} "
                            "(consumer group " + topics.app_id + " has no members); "
                            "start `salesflow stream`")
    return status


# --- rendering ----------------------------------------------------------------------------------


def render(report: Status, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"salesflow status: namespace {report.namespace}, {report.time}",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("broker", report.broker +
                  (f"  [red]{report.kafka_error}[/]" if report.kafka_error else ""))
    table.add_row("database", (report.database or "?") +
                  (f"  [red]{report.database_error}[/]" if report.database_error else ""))
    for note in report.notes:
        table.add_row("note", f"[yellow]{note}[/]")
    if report.kafka_error or not report.worker_ever_ran:
        console.print(table)
        return
    workers = ", ".join(
        f"{w.host}{'' if w.client_id == 'rdkafka' else f' ({w.client_id})'}: partitions "
        f"{','.join(map(str, w.partitions)) or '-'}" for w in report.workers) or "[red]none[/]"
    table.add_row("workers", f"{len(report.workers)} live in {report.topics['group']}"
                  f" ({report.group_state}): {workers}")
    if report.in_per_second is not None:
        table.add_row("rate (last minute)", f"{report.in_per_second:,.0f} sales in/s, "
                      f"{report.accepted_per_second:,.0f} accepted/s")
    lag_msgs = sum(report.lag.values())
    eta = ("caught up" if not report.lag_sales else
           f"catch up in ≈ {duration(report.catch_up_seconds)}"
           if report.catch_up_seconds is not None else "not moving")
    table.add_row("behind", f"{lag_msgs:,} messages ≈ {report.lag_sales:,} sales on "
                  f"{report.topics['sales']}: {eta}")
    if report.newest_sale_at:
        table.add_row("newest sale applied", f"sent at {report.newest_sale_at}")
    table.add_row("records in", f"{report.records_in:,}")
    table.add_row("accepted", f"{report.accepted:,}")
    table.add_row("exact replays (dropped)", f"{report.exact_replays:,}")
    wait = f"{report.pending:,}"
    if report.pending and report.first_dead_letter_due:
        wait += f" (the first is dead-lettered at {report.first_dead_letter_due} unless its " \
                "dimension arrives)"
    table.add_row("waiting for a dimension", wait)
    for reason, n in report.dead_lettered.items():
        table.add_row(f"dead-lettered: {reason}", f"{n:,}")
    holds = "[green]holds[/]" if report.reconciled else "[red]DOES NOT HOLD[/]"
    table.add_row("in = accepted + replays + dead-lettered + waiting",
                  f"{report.records_in:,} = {report.accepted:,} + {report.exact_replays:,} + "
                  f"{report.dead_lettered_total:,} + {report.pending:,}: {holds}")
    dlq = report.topics["dlq"]
    producer = sum(report.producer_dead_lettered.values())
    match = "[green]matches the counts[/]" if report.dlq_matches else \
        "[red]differs from the counts[/]"
    table.add_row(f"on {dlq}", f"{report.stream_letters_on_dlq:,} from the stream ({match}) + "
                  f"{producer:,} from producers (never reached {report.topics['sales']}) + "
                  f"{report.dimension_letters_on_dlq:,} dimension records")
    for reason, n in report.producer_dead_lettered.items():
        table.add_row(f"producer dead-lettered: {reason}", f"{n:,}")
    flush = report.last_flush
    table.add_row("last flush", f"{flush['finished_at']:%Y-%m-%d %H:%M:%S} UTC "
                  f"({duration(report.last_flush_age_seconds)} ago), "
                  f"{flush['duration_seconds']:.2f} s" if flush else
                  "never (is `salesflow marts follow` running?)")
    failure = report.last_flush_error
    if failure:
        newer = not flush or failure["finished_at"] > flush["finished_at"]
        table.add_row("last flush error", f"[{'red' if newer else 'dim'}]"
                      f"{failure['finished_at']} UTC: {escape(failure['error'] or '')}[/]")
    for name, n in report.quarantined.items():
        table.add_row(f"quarantined rows: {name}", f"[red]{n:,}[/]")
    for name, n in report.mart_rows.items():
        table.add_row(f"rows: {name}", f"{n:,}")
    console.print(table)


def run(settings: Settings, json_output: bool, watch: float | None) -> int:
    """Print the report (again every `watch` seconds); the exit code says whether Kafka and
    the database answered."""
    from rich.console import Console

    console = Console()
    if watch is None or json_output:
        report = collect(settings)
        if json_output:
            print(report.to_json())
        else:
            render(report, console)
        return 0 if report.healthy else 1
    from rich.console import Group
    from rich.live import Live

    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                live.update(Group(*_renderables(collect(settings))), refresh=True)
                time.sleep(watch)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return 0


def _renderables(report: Status) -> list[Any]:
    """The report as rich renderables (for `--watch`)."""
    from rich.console import Console

    captured: list[Any] = []

    class _Collect(Console):
        def print(self, *objects: Any, **_: Any) -> None:  # type: ignore[override]
            captured.extend(objects)

    render(report, _Collect())
    return captured
