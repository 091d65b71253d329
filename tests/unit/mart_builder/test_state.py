"""The builder's picture of the stream app's state: partials merged per key, deletions, the
data clock, and exactly which customers' inactive_status flips when as_of moves."""

from __future__ import annotations

from datetime import date, timedelta

from mart_builder.metrics import MartRules, customer_values
from mart_builder.state import Aggregates, Dimensions, Freshness
from salesflow.sale import Sale
from salesflow.tables import CustomerMonth, PartitionCounts, TeamMonth

D0 = date(2025, 1, 1)


def cm(customer: int, day: date, *cents: int) -> CustomerMonth:
    agg = CustomerMonth(customer, f"{day:%Y-%m}")
    for c in cents:
        agg.add(Sale("s", customer, 1, "p", day, 1, c, 1, c))
    return agg


def test_partials_of_a_key_are_merged_and_a_deleted_partial_leaves() -> None:
    aggs = Aggregates()
    a, b = cm(7, D0, 100, 250), cm(7, D0 + timedelta(days=3), 40)
    aggs.customer_record(0, a.key, a.encode())
    aggs.customer_record(3, b.key, b.encode())
    assert aggs.merge() == ({7}, set())
    assert aggs.customer_months(7) == [("2025-01", 390, 3, 250, D0.toordinal(),
                                        D0.toordinal() + 3)]
    assert aggs.clock == D0.toordinal() + 3
    aggs.customer_record(3, b.key, None)  # a tombstone of one partition's partial
    assert aggs.merge() == ({7}, set())
    assert aggs.customer_months(7)[0][1:4] == (350, 2, 250)
    assert aggs.clock == D0.toordinal()  # the latest sale went with it
    aggs.customer_record(0, a.key, None)
    assert aggs.merge() == ({7}, set())
    assert aggs.customer_months(7) == [] and aggs.clock == 0
    assert aggs.merge() == (set(), set())  # nothing new: nothing changed


def test_team_partials_and_the_stores_of_a_person() -> None:
    aggs = Aggregates()
    t = TeamMonth(121, 4, "2025-02", 500, 2, 300)
    aggs.team_record(1, t.key, t.encode())
    aggs.team_record(2, TeamMonth(122, 4, "2025-02").key, TeamMonth(122, 4, "2025-02", 1, 1,
                                                                      1).encode())
    assert aggs.merge() == (set(), {121, 122})
    assert aggs.stores[121] == {(4, "2025-02"): (500, 2, 300)}
    assert aggs.stores_of[4] == {121, 122}


def test_flips_are_exactly_the_customers_whose_status_changes() -> None:
    aggs = Aggregates()
    rules = MartRules(inactive_after_days=90)
    lasts = {c: D0 + timedelta(days=c) for c in range(0, 40)}
    for c, day in lasts.items():
        agg = cm(c + 1, day, 100)
        aggs.customer_record(0, agg.key, agg.encode())
    aggs.merge()
    before, after = D0 + timedelta(days=100), D0 + timedelta(days=117)
    flipped = aggs.flips(before.toordinal(), after.toordinal(), rules.inactive_after_days)

    def inactive(customer: int, as_of: date) -> bool:
        months = aggs.customer_months(customer)
        return customer_values(customer, months, (None, None, None), rules,
                               as_of.toordinal())[0][14]

    expected = {c for c in aggs.customers if inactive(c, before) != inactive(c, after)}
    assert flipped == expected and len(expected) == 17
    assert aggs.flips(after.toordinal(), before.toordinal(), 90) == expected  # either way


def test_freshness_is_the_newest_timestamp_over_the_partitions() -> None:
    fresh = Freshness()
    assert fresh.newest() == 0
    fresh.record(0, b"totals", PartitionCounts(newest_ms=1_000).encode())
    fresh.record(1, b"totals", PartitionCounts(newest_ms=5_000).encode())
    fresh.record(1, b"dimensions", b"{}")
    assert fresh.newest() == 5_000
    fresh.record(0, b"totals", PartitionCounts(newest_ms=7_000).encode())
    assert fresh.newest() == 7_000


def test_a_changed_name_marks_its_customer_and_a_deleted_record_nulls_it() -> None:
    dims = Dimensions()
    record = {"customer_id": 5, "first_name": "Asha", "last_name": "Rao", "address": "Delhi",
              "pincode": "110011", "phone_number": "91", "customer_joining_date": None}
    dims.record("customer", b"5", record)
    assert dims.changed_customers == {5} and dims.names_of(5)[0] == "Asha Rao"
    dims.written()
    dims.record("customer", b"5", dict(record))  # the same record again: no change
    assert dims.changed_customers == set()
    dims.record("customer", b"5", None)
    assert dims.changed_customers == {5} and dims.names_of(5) == (None, None, None)
