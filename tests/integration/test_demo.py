"""`salesflow demo` end to end as a user runs it: the stream worker and `marts follow` as
subprocesses, the marts in SQLite, a summary that explains its numbers and says what next."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from salesflow.settings import Settings
from tests.workers import worker_env

pytestmark = pytest.mark.integration


def test_demo_explains_its_numbers(settings: Settings, tmp_path: Path) -> None:
    env = worker_env(settings, COLUMNS="200")
    env.pop("SALESFLOW_MART_DB_URL")  # the demo's default: salesflow.db in the working folder
    done = subprocess.run([sys.executable, "-m", "salesflow_cli", "demo", "--rows", "3000"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in out + done.stderr
    produced = re.search(r"read (\d+) / sent (\d+) / dead-lettered (\d+)", out)
    assert produced, out
    held = re.search(r"the dead-letter topic holds (\d[\d,]*) \+ (\d[\d,]*) = (\d[\d,]*) "
                     r"letters, and (\d[\d,]*) sales are in the marts", out)
    assert held, out
    producer, stream, total, in_marts = (int(g.replace(",", "")) for g in held.groups())
    assert producer == int(produced.group(3)) and producer + stream == total
    flagged = re.findall(r"(price_off_list|multi_store_day|customer_spend_spike|"
                         r"salesperson_spike) +\S* *(\d+)", out)
    assert {rule for rule, n in flagged if int(n) >= 3} == {
        "price_off_list", "multi_store_day", "customer_spend_spike", "salesperson_spike"}, out
    assert "exact replays" in out and "reconciled" in out and "NOT reconciled" not in out
    assert "sqlite3 " in out and "salesflow marts show" in out and "marts export" in out
    assert "Kafka at" in out and "left as it was" in out  # the shared broker was running
    db = tmp_path / "salesflow.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM customers_data_mart").fetchone()[0]
        sales = conn.execute("SELECT SUM(purchase_frequency) FROM customers_data_mart "
                             "WHERE sales_date_month = (SELECT MAX(sales_date_month) "
                             "FROM customers_data_mart)").fetchone()[0]
    assert rows > 0 and sales > 0
    assert in_marts > 0
    assert (tmp_path / "demo-out" / "marts-follow.log").is_file()
