"""`salesflow demo`: the main job end to end on the embedded defaults.

Local Kafka (started if needed), generated data with some bad rows, one stream worker (which
also flushes the marts), the marts in SQLite, and a short printed summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.sales import produce_sales
from salesflow import stack
from salesflow.kafka import wait_for_group
from salesflow.settings import Settings
from salesflow.topics import Topics
from salesflow_cli.status import collect, stream_totals
from stream_app.dlq import read_letters, reason_counts

DEMO_RETRY_SECONDS = 5


def run_demo(settings: Settings, rows: int, console: Console) -> None:
    topics = Topics(settings.namespace)
    console.print("[bold]1/5[/] local Kafka")
    stack.up(settings, mysql=False)
    out = Path("demo-out")
    console.print(f"[bold]2/5[/] generating {rows:,} sales (2% bad rows) into {out}/")
    sales = generate(out, GenerateSpec(rows=rows, bad_fraction=0.02))
    console.print("[bold]3/5[/] publishing dimensions and sales")
    produce_dims(settings, out)
    summary = produce_sales(settings, [sales])
    console.print(f"      {summary.line()}")
    console.print("[bold]4/5[/] stream worker: validating, aggregating, flushing the marts")
    log = out / "stream-worker.log"
    # Sales with an unknown customer, store, salesperson or product wait for it this long
    # before they are dead-lettered (300 s by default; the demo's bad ids never arrive).
    env = os.environ | {"SALESFLOW_UNKNOWN_REF_RETRY_SECONDS": str(DEMO_RETRY_SECONDS)}
    with log.open("ab") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "salesflow_cli", "stream"],
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_group(settings, topics.app_id, topics.sales, timeout=600)
        deadline = time.monotonic() + DEMO_RETRY_SECONDS + 60
        while stream_totals(settings).waiting and time.monotonic() < deadline:
            time.sleep(1)
        wait_for_group(settings, topics.app_id, topics.sales, timeout=600)
        builder = MartBuilder(settings, open_writer(settings))
        builder.flush()
        builder.close()
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    console.print("[bold]5/5[/] summary")
    print_summary(settings, console)
    console.print(f"\nworker log: {log}")


def print_summary(settings: Settings, console: Console) -> None:
    writer = open_writer(settings)
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
    status = collect(settings)
    console.print(f"stream: {status.records_in:,} in = {status.accepted:,} accepted + "
                  f"{status.exact_replays:,} exact replays + {status.dead_lettered_total:,} "
                  f"dead-lettered + {status.pending:,} waiting: "
                  f"{'reconciled' if status.reconciled else 'NOT reconciled'}")
    where = writer.engine.url
    shown = (Path(where.database).resolve() if where.get_backend_name() == "sqlite"
             else where.render_as_string(hide_password=True))
    console.print(f"marts: {len(customers):,} customer rows, {len(team):,} team rows in {shown}")
