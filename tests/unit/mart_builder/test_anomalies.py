"""The anomaly rows of the worked example (tests/data/anomalies), through the pure path the
flush and the rebuild share."""

from __future__ import annotations

import csv
from decimal import Decimal
from operator import itemgetter

from mart_builder.anomalies import anomaly_rows, price_flags_of
from mart_builder.metrics import aggregate
from mart_builder.state import Aggregates
from producers.dims import read_dimension
from producers.rows import parse_sale_row
from salesflow.anomalies import AnomalyRules
from salesflow.sale import ProductPrice, cents
from tests.marts_expected import DATA_DIR

EXAMPLE = DATA_DIR / "anomalies"


def example_sales():
    with (EXAMPLE / "sales.csv").open(encoding="utf-8", newline="") as f:
        return [parse_sale_row(row) for row in csv.DictReader(f)]


def list_prices() -> dict[str, ProductPrice]:
    return {r["name"]: ProductPrice(cents(r["current_price"]), cents(r["old_price"]),
                                    r["updated_date"])
            for _, r in read_dimension(EXAMPLE / "product.csv", "product")}


def expected() -> list[dict[str, object]]:
    with (EXAMPLE / "expected_sales_anomalies.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for column in ("customer_id", "store_id", "sales_person_id"):
            row[column] = int(row[column]) if row[column] else None
        row["sale_id"] = row["sale_id"] or None
        row["observed"], row["expected"] = Decimal(row["observed"]), Decimal(row["expected"])
    return rows


def test_the_worked_example_gives_exactly_the_expected_rows():
    sales, prices = example_sales(), list_prices()
    customers, team = aggregate(sales)
    rules = AnomalyRules()
    flags = price_flags_of(((s, prices[s.product_name].list_cents(s.sales_date))
                            for s in sales), rules)
    rows = anomaly_rows(customers.values(), team.values(), flags, rules)
    assert [r.as_dict() for r in rows] == sorted(expected(),
                                                 key=lambda r: (r["rule"], r["entity"]))


def test_thresholds_are_settings():
    sales, prices = example_sales(), list_prices()
    customers, team = aggregate(sales)
    strict = AnomalyRules(multi_store_min_stores=4, spend_spike_factor=Decimal(20),
                          salesperson_spike_factor=Decimal(20),
                          price_tolerance_percent=Decimal(30))
    flags = price_flags_of(((s, prices[s.product_name].list_cents(s.sales_date))
                            for s in sales), strict)
    assert anomaly_rows(customers.values(), team.values(), flags, strict) == []


def test_the_flush_path_over_partials_of_two_partitions_gives_the_same_rows():
    """The builder's input: each partition's partial aggregates and price flags, as the
    changelogs carry them; a customer's crowded day spans both partitions."""
    sales, prices = example_sales(), list_prices()
    rules = AnomalyRules()
    state = Aggregates()
    for partition in (0, 1):
        own = sales[partition::2]
        customers, team = aggregate(own)
        for month in customers.values():
            state.customer_record(partition, month.key, month.encode())
        for month in team.values():
            state.team_record(partition, month.key, month.encode())
        for flag in price_flags_of(((s, prices[s.product_name].list_cents(s.sales_date))
                                    for s in own), rules):
            state.price_flag_record(partition, flag.key, flag.encode())
    customers, stores = state.merge()
    rows = [row for owner in [*(("c", c) for c in customers), *(("s", s) for s in stores)]
            for row in state.anomalies(owner, rules)]
    key = itemgetter("rule", "entity")
    assert sorted((r.as_dict() for r in rows), key=key) == sorted(expected(), key=key)
    # a flag deleted from its changelog (a tombstone) is gone at the next merge
    state.price_flag_record(0, b"p-above", None)
    state.price_flag_record(1, b"p-above", None)
    changed, _ = state.merge()
    assert changed == {2}
    assert [r.entity for r in state.anomalies(("c", 2), rules)] == ["sale:p-below"]
