"""A few rows of the `sales_anomalies` mart, one or more of each rule, for the tests of what
reads it (`salesflow anomalies`, the dashboard panel): written straight into the table, since
the builder that fills it is tested on its own.

The times are chosen for the filters and the order: two flags share a time (the rule then
orders them), one is a second before 2026-03-03 and one exactly at it (`--since 2026-03-03`
keeps the latter only), and one holds the largest DECIMAL(14,2) (exact through SQLite's
REAL storage too).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from mart_builder.schema import sales_anomalies

FLAGS: list[dict] = [
    dict(rule="price_off_list", entity="sale:s-001", customer_id=7, store_id=122,
         sales_person_id=4, sale_id="s-001", period="2025-02-03", observed=Decimal("75.00"),
         expected=Decimal("50.00"), first_flagged_at=datetime(2026, 3, 1, 10, 0, 0)),
    dict(rule="multi_store_day", entity="customer:1:2025-03-05", customer_id=1, store_id=None,
         sales_person_id=None, sale_id=None, period="2025-03-05", observed=Decimal("3.00"),
         expected=Decimal("3.00"), first_flagged_at=datetime(2026, 3, 1, 10, 0, 0)),
    dict(rule="customer_spend_spike", entity="customer:501:2025-04", customer_id=501,
         store_id=None, sales_person_id=None, sale_id=None, period="2025-04",
         observed=Decimal("2120.00"), expected=Decimal("50.00"),
         first_flagged_at=datetime(2026, 3, 2, 8, 30, 0)),
    dict(rule="salesperson_spike", entity="team:121:9:2025-04", customer_id=None, store_id=121,
         sales_person_id=9, sale_id=None, period="2025-04", observed=Decimal("2120.00"),
         expected=Decimal("50.00"), first_flagged_at=datetime(2026, 3, 2, 23, 59, 59)),
    dict(rule="price_off_list", entity="sale:s-002", customer_id=8, store_id=121,
         sales_person_id=1, sale_id="s-002", period="2025-04-20",
         observed=Decimal("999999999999.99"), expected=Decimal("0.10"),
         first_flagged_at=datetime(2026, 3, 3, 0, 0, 0)),
]

#: the entities in the order a listing gives them (first flagged, then rule, then entity)
ORDER = ["customer:1:2025-03-05", "sale:s-001", "customer:501:2025-04", "team:121:9:2025-04",
         "sale:s-002"]
#: flags per rule, and per UTC day of first_flagged_at and rule (what the panel counts)
BY_RULE = Counter(f["rule"] for f in FLAGS)
BY_DAY_AND_RULE = Counter((f["first_flagged_at"].date(), f["rule"]) for f in FLAGS)


def insert_flags(engine: sa.Engine, flags: list[dict] = FLAGS) -> None:
    """Replace the table's rows with `flags` (the table must exist: migrate first)."""
    with engine.begin() as conn:
        conn.execute(sales_anomalies.delete())
        conn.execute(sales_anomalies.insert(), flags)
