"""`salesflow demo`: the main job end to end on the embedded defaults, explained.

Kafka (a local one is started unless one already answers at SALESFLOW_KAFKA_BOOTSTRAP),
generated data with some bad rows, one stream worker and the mart builder
(`salesflow marts follow`) as subprocesses, the marts in SQLite, and a summary that says
where every number comes from, how to look at the marts, and how to stop Kafka.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from salesflow.settings import Settings

DEMO_RETRY_SECONDS = 5
BAD_FRACTION = 0.02
PLANTED_ANOMALIES = 3  # cases of each anomaly rule planted in the generated sales


@dataclass
class DemoNumbers:
    """What the demo did, for the explanation."""

    rows: int
    producer_dead_lettered: int
    sent: int


def run_demo(settings: Settings, rows: int, console: Console) -> None:
    from producers.dims import produce_dims
    from producers.generate import GenerateSpec, generate
    from producers.sales import produce_sales
    from salesflow import stack
    from salesflow.counts import stream_totals
    from salesflow.errors import KafkaUnavailable
    from salesflow.kafka import check_reachable, wait_for_group
    from salesflow.topics import Topics

    topics = Topics(settings.namespace)
    try:
        check_reachable(settings, timeout=3)
        console.print(f"[bold]1/5[/] Kafka answers at {settings.kafka_bootstrap}: using it")
        started_kafka = False
    except KafkaUnavailable:
        console.print(f"[bold]1/5[/] starting a local Kafka at {settings.kafka_bootstrap}")
        stack.up(settings, mysql=False)
        started_kafka = True
    out = Path("demo-out")
    console.print(f"[bold]2/5[/] generating {rows:,} sales ({BAD_FRACTION:.0%} bad rows, "
                  f"{PLANTED_ANOMALIES} planted cases of each anomaly rule) into {out}/")
    sales = generate(out, GenerateSpec(rows=rows, bad_fraction=BAD_FRACTION,
                                       anomalies=PLANTED_ANOMALIES))
    with sales.open(encoding="utf-8") as f:
        generated = sum(1 for _ in f) - 1  # with the planted ones; no row spans two lines
    console.print("[bold]3/5[/] publishing dimensions and sales")
    produce_dims(settings, out)
    summary = produce_sales(settings, [sales])
    console.print(f"      {summary.line()}")
    console.print("[bold]4/5[/] stream worker and mart builder: validating, aggregating, "
                  "flushing the marts")
    # Sales with an unknown customer, store, salesperson or product wait for it this long
    # before they are dead-lettered (300 s by default; the demo's bad ids never arrive).
    env = os.environ | {"SALESFLOW_UNKNOWN_REF_RETRY_SECONDS": str(DEMO_RETRY_SECONDS),
                        "SALESFLOW_FLUSH_INTERVAL_SECONDS": "1"}
    logs = {name: out / f"{name}.log" for name in ("stream-worker", "marts-follow")}
    procs = []
    try:
        for name, args in (("stream-worker", ["stream"]), ("marts-follow", ["marts", "follow"])):
            with logs[name].open("ab") as log_file:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "salesflow_cli", *args], stdout=log_file,
                    stderr=subprocess.STDOUT, env=env | {"SALESFLOW_METRICS_PORT": "0"}))
        wait_for_group(settings, topics.app_id, topics.sales, timeout=600)
        deadline = time.monotonic() + DEMO_RETRY_SECONDS + 60
        while stream_totals(settings).waiting and time.monotonic() < deadline:
            time.sleep(1)
        wait_for_group(settings, topics.app_id, topics.sales, timeout=600)
        _wait_for_flush(settings, procs[1], time.time())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    console.print("[bold]5/5[/] summary")
    print_summary(settings, console,
                  DemoNumbers(generated, summary.dead_lettered, summary.sent))
    console.print(f"\nlogs: {logs['stream-worker']}, {logs['marts-follow']}")
    _print_kafka_note(settings, console, started_kafka)


def _wait_for_flush(settings: Settings, follower: subprocess.Popen, after: float,
                    timeout: float = 120) -> None:
    """Until `marts follow` has flushed everything processed by `after` (its flush log)."""
    from mart_builder.db import make_engine
    from mart_builder.writer import MartWriter
    from salesflow.errors import SalesflowError

    deadline = time.monotonic() + timeout
    writer = MartWriter(make_engine(settings))
    while time.monotonic() < deadline:
        if follower.poll() is not None:
            raise SalesflowError("the mart builder exited early; see demo-out/marts-follow.log")
        try:
            last = writer.last_run("flush")
        except SalesflowError:  # the tables are not there yet
            last = None
        if last and _utc_seconds(last["finished_at"]) >= after:
            return
        time.sleep(0.5)
    raise SalesflowError(f"the marts were not flushed within {timeout:.0f}s; "
                         "see demo-out/marts-follow.log")


def _utc_seconds(naive_utc) -> float:
    from datetime import UTC

    return naive_utc.replace(tzinfo=UTC).timestamp()


def explain(numbers: DemoNumbers, replays: int, stream_dead: int, waiting: int) -> list[str]:
    """Where the demo's counts come from, in words (pure, for the summary and its test)."""
    bad = numbers.producer_dead_lettered + replays + stream_dead + waiting
    return [
        f"Of {numbers.rows:,} generated rows, about {BAD_FRACTION:.0%} were spoiled on purpose, "
        "each breaking one of 12 rules chosen at random:",
        f"  {numbers.producer_dead_lettered:,} had a missing field or an unreadable value: the "
        "producer dead-lettered them (they never reached the sales topic);",
        f"  {replays:,} were exact copies of earlier sales: the stream app dropped them as "
        "exact replays (counted, not dead-lettered: re-sending data never double counts);",
        f"  {stream_dead:,} broke a rule the stream app checks (bounds, totals, dates, unknown "
        "customer, store, salesperson or product after "
        f"{DEMO_RETRY_SECONDS} s of waiting, a different sale under a known sale_id): the "
        "stream app dead-lettered them"
        + (f"; {waiting:,} still wait for a dimension" if waiting else "") + ".",
        f"So the dead-letter topic holds {numbers.producer_dead_lettered:,} + {stream_dead:,} = "
        f"{numbers.producer_dead_lettered + stream_dead:,} letters, and "
        f"{numbers.rows - bad:,} sales are in the marts.",
    ]


def print_summary(settings: Settings, console: Console,
                  numbers: DemoNumbers | None = None) -> None:
    from mart_builder.db import make_engine
    from mart_builder.writer import MartWriter
    from salesflow.anomalies import RULES
    from stream_app.dlq import read_letters, reason_counts

    writer = MartWriter(make_engine(settings))
    customers = writer.read_customers()
    team = writer.read_team()
    lifetime = {r["customer_id"]: r for r in customers}
    top = sorted(lifetime.values(), key=lambda r: r["customer_lifetime_value"], reverse=True)
    table = Table(title="Top customers by lifetime value")
    for col in ("customer", "name", "lifetime value", "purchases", "segment", "inactive"):
        table.add_column(col)
    for r in top[:5]:
        table.add_row(str(r["customer_id"]), r["full_name"] or "?",
                      f"{r['customer_lifetime_value']:,.2f}", str(r["purchase_frequency"]),
                      r["customer_segment"], "yes" if r["inactive_status"] else "no")
    console.print(table)

    latest = max((r["sales_month"] for r in team), default=None)
    table = Table(title=f"Top salesperson per store, {latest}")
    for col in ("store", "salesperson", "total sales", "incentive", "share %"):
        table.add_column(col)
    for r in sorted((r for r in team if r["sales_month"] == latest and
                     r["top_performance_rank"] == 1), key=lambda r: r["store_id"]):
        table.add_row(str(r["store_id"]), r["full_name"] or "?", f"{r['total_sales']:,.2f}",
                      f"{r['incentive']:,.2f}", f"{r['sales_contribution_percentage']}")
    console.print(table)

    reasons = reason_counts(read_letters(settings))
    table = Table(title="Dead letters by reason (producer and stream)")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, n in reasons.most_common():
        table.add_row(reason, f"{n:,}")
    console.print(table)
    flags = writer.read_table("sales_anomalies")
    table = Table(title="Anomaly flags by rule (salesflow anomalies lists them)")
    for col in ("rule", "flags", "for example", "observed", "expected"):
        table.add_column(col)
    for rule in RULES:
        own = [r for r in flags if r["rule"] == rule]
        first = own[0] if own else None
        table.add_row(rule, f"{len(own):,}", first["entity"] if first else "",
                      f"{first['observed']}" if first else "",
                      f"{first['expected']}" if first else "")
    console.print(table)
    from salesflow.counts import stream_totals

    totals = stream_totals(settings)
    console.print(f"stream: {totals.records_in:,} in = {totals.accepted:,} accepted + "
                  f"{totals.replays:,} exact replays + {totals.dead_lettered_total:,} "
                  f"dead-lettered + {totals.waiting:,} waiting: "
                  f"{'reconciled' if totals.reconciled else 'NOT reconciled'}")
    if numbers is not None:
        for line in explain(numbers, totals.replays, totals.dead_lettered_total,
                            totals.waiting):
            console.print(line, highlight=False)
    where = writer.engine.url
    sqlite = where.get_backend_name() == "sqlite"
    shown = (Path(where.database).resolve() if sqlite
             else where.render_as_string(hide_password=True))
    console.print(f"\nmarts: {len(customers):,} customer rows, {len(team):,} team rows in "
                  f"{shown}")
    console.print("Look at them:", highlight=False)
    if sqlite:
        console.print(f"  sqlite3 {where.database} \"SELECT customer_id, full_name, "
                      "customer_lifetime_value, customer_segment FROM customers_data_mart "
                      "ORDER BY customer_lifetime_value DESC LIMIT 10\"",
                      highlight=False, markup=False)
    console.print("  salesflow marts show --customer 42        (or --store 121, --month "
                  f"{latest or 'YYYY-MM'})", highlight=False, markup=False)
    console.print("  salesflow marts export --format parquet --out marts/   (or --format csv)",
                  highlight=False, markup=False)
    console.print("  salesflow status; salesflow dlq show --reason unknown_customer",
                  highlight=False, markup=False)


def _print_kafka_note(settings: Settings, console: Console, started: bool) -> None:
    from salesflow import stack

    kafka = next((s for s in stack.status(settings) if s.name == "kafka"), None)
    if kafka is not None and kafka.running:
        how = "started by this demo" if started else "the local stack"
        console.print(f"\nKafka is left running at {kafka.address} (pid {kafka.pid}, {how}; "
                      f"data in {kafka.data_dir}). Stop it with `salesflow stack down` "
                      "(add --wipe to delete its data too).", highlight=False)
    else:
        console.print(f"\nKafka at {settings.kafka_bootstrap} was already running and is left "
                      "as it was.", highlight=False)
