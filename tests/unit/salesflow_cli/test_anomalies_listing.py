"""`salesflow anomalies`, the pure part: money as exact text, times as UTC, the JSON objects,
the counts per rule and the printed table (the real console script on SQLite and MariaDB:
tests/integration/test_cli_verbs.py)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from rich.console import Console

from salesflow.anomalies import RULES
from salesflow_cli.anomalies import (
    COLUMNS,
    counts_by_rule,
    flag_json,
    flags_json,
    money_text,
    render,
    selection,
    since_start,
    utc_text,
)
from tests.anomaly_flags import FLAGS, ORDER


def ordered() -> list[dict]:
    by_entity = {f["entity"]: f for f in FLAGS}
    return [by_entity[e] for e in ORDER]


def printed(flags: list[dict], rule: str | None = None, since: date | None = None,
            width: int = 250) -> str:
    console = Console(record=True, width=width, color_system=None)
    render(console, flags, rule, since)
    return console.export_text()


def test_money_is_exact_text_with_two_decimals() -> None:
    assert money_text(Decimal("999999999999.99")) == "999999999999.99"
    assert money_text(Decimal("3")) == "3.00"
    assert money_text(Decimal("1E+3")) == "1000.00"  # never an exponent
    assert money_text(Decimal("-0.05")) == "-0.05"
    assert money_text(75.5) == "75.50"  # a driver's float, through its shortest text
    assert money_text(None) is None


def test_times_are_utc_to_the_second() -> None:
    assert utc_text(datetime(2026, 3, 1, 10, 0, 0, 123456)) == "2026-03-01T10:00:00Z"
    aware = datetime(2026, 3, 1, 11, 30, tzinfo=timezone(timedelta(hours=1, minutes=30)))
    assert utc_text(aware) == "2026-03-01T10:00:00Z"
    assert utc_text(datetime(2026, 3, 1, 10), sep=" ", zone="") == "2026-03-01 10:00:00"


def test_a_flag_as_json() -> None:
    assert flag_json(FLAGS[0]) == {
        "rule": "price_off_list", "entity": "sale:s-001", "customer_id": 7, "store_id": 122,
        "sales_person_id": 4, "sale_id": "s-001", "period": "2025-02-03", "observed": "75.00",
        "expected": "50.00", "first_flagged_at": "2026-03-01T10:00:00Z"}
    nulls = flag_json(FLAGS[1])
    assert list(nulls) == list(COLUMNS)
    assert (nulls["store_id"], nulls["sales_person_id"], nulls["sale_id"]) == (None, None, None)


def test_flags_as_a_json_array_in_the_given_order() -> None:
    loaded = json.loads(flags_json(ordered()))
    assert [f["entity"] for f in loaded] == ORDER
    assert loaded[-1]["observed"] == "999999999999.99"
    assert json.loads(flags_json([])) == []


def test_counts_cover_every_rule_in_the_spec_order() -> None:
    assert counts_by_rule(FLAGS) == {"price_off_list": 2, "multi_store_day": 1,
                                     "customer_spend_spike": 1, "salesperson_spike": 1}
    assert list(counts_by_rule([])) == list(RULES)
    assert set(counts_by_rule([]).values()) == {0}
    assert counts_by_rule([], rule="salesperson_spike") == {"salesperson_spike": 0}
    # a rule a newer release wrote is counted too, after the known ones
    assert list(counts_by_rule([{"rule": "new_rule"}]))[-1] == "new_rule"


def test_since_is_the_start_of_the_day_utc() -> None:
    assert since_start(date(2026, 3, 3)) == datetime(2026, 3, 3)
    assert since_start(datetime(2026, 3, 3, 15, 4)) == datetime(2026, 3, 3)


def test_the_table_oldest_first_with_exact_money_and_a_count_per_rule() -> None:
    text = printed(ordered())
    assert "anomaly flags: 5" in text
    positions = [text.index(e) for e in ORDER]
    assert positions == sorted(positions)
    assert "2026-03-01 10:00:00" in text and "999999999999.99" in text and "2120.00" in text
    assert text.strip().splitlines()[-1] == (
        "by rule: price_off_list 2, multi_store_day 1, customer_spend_spike 1, "
        "salesperson_spike 1")


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_a_narrow_terminal_folds_other_columns_never_an_amount(width: int) -> None:
    text = printed(ordered(), width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    cells = {cell.strip() for line in text.splitlines() for cell in line.split("│")}
    for flag in FLAGS:
        assert {money_text(flag["observed"]), money_text(flag["expected"])} <= cells, (
            width, flag["entity"])


def test_the_filters_are_named_and_an_empty_listing_says_so() -> None:
    assert selection(None, None) == ""
    assert selection("price_off_list", date(2026, 3, 3)) == (
        " of rule price_off_list first flagged since 2026-03-03 (UTC)")
    assert printed([]).strip() == "no anomaly flags"
    assert printed([], "multi_store_day", date(2026, 3, 3)).strip() == (
        "no anomaly flags of rule multi_store_day first flagged since 2026-03-03 (UTC)")
    one = printed([FLAGS[2]], "customer_spend_spike")
    assert one.strip().splitlines()[-1] == "by rule: customer_spend_spike 1"
