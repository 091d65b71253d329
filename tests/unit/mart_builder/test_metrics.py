"""The metric math against `metrics.md`: the worked examples end to end, then column by column."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import fields, replace
from datetime import date, timedelta
from decimal import Decimal

import pytest

from mart_builder.metrics import (
    CUSTOMER_COLUMNS,
    CUSTOMER_KEY,
    TEAM_COLUMNS,
    TEAM_KEY,
    CustomerMartRow,
    MartRules,
    TeamMartRow,
    aggregate,
    customer_rows,
    data_as_of,
    previous_month,
    ratio,
    team_rows,
)
from mart_builder.model import Customer, SalesPerson
from salesflow.sale import Sale
from salesflow.settings import Settings
from salesflow.tables import CustomerMonth, TeamMonth
from tests.marts_expected import (
    DATA_DIR,
    assert_marts_equal,
    csv_columns,
    load_customers,
    load_expected_customers,
    load_expected_team,
    load_sales_people,
    load_valid_sales,
)

D = Decimal
_ids = itertools.count(1)


def sale(
    amount: str,
    day: str = "2025-01-15",
    customer: int = 1,
    store: int = 1,
    person: int = 1,
) -> Sale:
    cents = D(amount) * 100
    assert cents == cents.to_integral_value()
    return Sale(f"s{next(_ids)}", customer, store, "sugar", date.fromisoformat(day), person,
                int(cents), 1, int(cents))


def team(sales: list[Sale], rules: MartRules | None = None) -> dict[tuple, TeamMartRow]:
    _, aggs = aggregate(sales)
    rows = team_rows(aggs.values(), PEOPLE, rules or MartRules())
    return {(r.store_id, r.sales_person_id, r.sales_month): r for r in rows}


def customers(
    sales: list[Sale], rules: MartRules | None = None, as_of: date | None = None
) -> dict[tuple, CustomerMartRow]:
    aggs, _ = aggregate(sales)
    rows = customer_rows(aggs.values(), CUSTOMERS, rules or MartRules(), as_of)
    return {(r.customer_id, r.sales_date_month): r for r in rows}


CUSTOMERS = {1: Customer(1, "Asha", "Rao", "Delhi", "110011", "9100000001"),
             2: Customer(2, "Ben", "Lal", "Noida", "201301", "9100000002")}
PEOPLE = {p: SalesPerson(p, f"P{p}", "Seller") for p in (1, 2, 3)}


# --- the worked examples ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_marts() -> tuple[list[CustomerMartRow], list[TeamMartRow]]:
    caggs, taggs = aggregate(load_valid_sales())
    rules = MartRules()
    as_of = data_as_of(caggs.values())
    return (customer_rows(caggs.values(), load_customers(), rules, as_of),
            team_rows(taggs.values(), load_sales_people(), rules))


def test_example_valid_sales_and_clock() -> None:
    sales = load_valid_sales()
    assert len(sales) == 72  # 128 input rows - 56 rejected (48 invalid, 8 later copies)
    assert data_as_of(aggregate(sales)[0].values()) == date(2026, 3, 31)


def test_examples_customers_mart(example_marts) -> None:
    assert_marts_equal(example_marts[0], load_expected_customers(), CUSTOMER_KEY)


def test_examples_team_mart(example_marts) -> None:
    assert_marts_equal(example_marts[1], load_expected_team(), TEAM_KEY)


def test_columns_and_keys_follow_the_seed() -> None:
    customer_header = csv_columns(DATA_DIR / "expected_customers_data_mart.csv")
    team_header = csv_columns(DATA_DIR / "expected_sales_team_data_mart.csv")
    assert tuple(customer_header) == CUSTOMER_COLUMNS
    assert tuple(team_header) == TEAM_COLUMNS
    assert CUSTOMER_KEY == ("customer_id", "sales_date_month")
    assert TEAM_KEY == ("store_id", "sales_person_id", "sales_month")
    assert tuple(f.name for f in fields(TeamMartRow)) == TEAM_COLUMNS


def test_rows_carry_rounded_typed_values(example_marts) -> None:
    for row in itertools.chain(*example_marts):
        for name, value in row.as_dict().items():
            if isinstance(value, Decimal):
                assert value.as_tuple().exponent == -2, (name, value)
            assert not isinstance(value, float), name
    assert all(isinstance(r.inactive_status, bool) for r in example_marts[0])
    assert all(type(r.top_performance_rank) is int for r in example_marts[1])


def test_comparator_reports_a_changed_cell_and_a_missing_row(example_marts) -> None:
    expected = load_expected_team()
    changed = copy.deepcopy(expected)
    changed[3]["incentive"] = "0.21"
    with pytest.raises(AssertionError, match="incentive"):
        assert_marts_equal(example_marts[1], changed, TEAM_KEY)
    with pytest.raises(AssertionError, match="unexpected row"):
        assert_marts_equal(example_marts[1], expected[1:], TEAM_KEY)
    nulled = copy.deepcopy(load_expected_customers())
    nulled[-1]["avg_time_between_purchases"] = "0.00"  # NULL must not compare equal to 0
    with pytest.raises(AssertionError, match="avg_time_between_purchases"):
        assert_marts_equal(example_marts[0], nulled, CUSTOMER_KEY)


def test_comparator_normalises_both_sides() -> None:
    actual = [{"customer_id": 1, "sales_date_month": date(2025, 2, 1), "total_sales": 10.5,
               "inactive_status": 0, "avg_time_between_purchases": None}]
    expected = [{"customer_id": "1", "sales_date_month": "2025-02", "total_sales": "10.50",
                 "inactive_status": "false", "avg_time_between_purchases": ""}]
    assert_marts_equal(actual, expected, CUSTOMER_KEY)


# --- sales_team_data_mart ---------------------------------------------------------------------


def test_rank_ties_share_rank_and_incentive() -> None:
    rows = team([sale("100.00", person=1), sale("100.00", person=2), sale("50.00", person=3)])
    by_person = {k[1]: r for k, r in rows.items()}
    assert [by_person[p].top_performance_rank for p in (1, 2, 3)] == [1, 1, 3]
    assert [by_person[p].incentive for p in (1, 2, 3)] == [D("1.00"), D("1.00"), D("0.00")]
    assert [by_person[p].sales_contribution_percentage for p in (1, 2, 3)] == [
        D("40.00"), D("40.00"), D("20.00")]


def test_growth_is_null_after_a_month_without_sales() -> None:
    rows = team([sale("100.00", "2025-01-10"), sale("150.00", "2025-03-10"),
                 sale("300.00", "2025-04-10"), sale("100.00", "2025-05-10")])
    jan, mar, apr, may = (rows[(1, 1, m)] for m in ("2025-01", "2025-03", "2025-04", "2025-05"))
    assert jan.sales_growth_rate is None and jan.month_over_month_variance == D("100.00")
    assert mar.sales_growth_rate is None and mar.month_over_month_variance == D("150.00")
    assert apr.sales_growth_rate == D("100.00") and apr.month_over_month_variance == D("150.00")
    assert may.sales_growth_rate == D("-66.67") and may.month_over_month_variance == D("-200.00")


def test_previous_month_crosses_the_year() -> None:
    assert previous_month("2025-01") == "2024-12"
    assert previous_month("2025-10") == "2025-09"
    assert previous_month("2000-03") == "2000-02"
    rows = team([sale("200.00", "2024-12-31"), sale("50.00", "2025-01-01")])
    jan = rows[(1, 1, "2025-01")]
    assert jan.sales_growth_rate == D("-75.00")
    assert jan.month_over_month_variance == D("-150.00")


def test_year_to_date_resets_in_january() -> None:
    rows = team([sale("100.00", "2024-11-02"), sale("200.00", "2024-12-02"),
                 sale("50.00", "2025-01-02"), sale("25.00", "2025-03-02")])
    ytd = [rows[(1, 1, m)].year_to_date_sales for m in ("2024-11", "2024-12", "2025-01", "2025-03")]
    assert ytd == [D("100.00"), D("300.00"), D("50.00"), D("75.00")]


def test_person_lifetime_and_month_figures() -> None:
    rows = team([sale("10.00", "2025-02-01"), sale("30.00", "2025-02-20"),
                 sale("5.00", "2025-06-01")])
    feb, jun = rows[(1, 1, "2025-02")], rows[(1, 1, "2025-06")]
    assert (feb.total_sales, feb.total_transactions) == (D("40.00"), 2)
    assert (feb.avg_transaction_value, feb.max_single_transaction) == (D("20.00"), D("30.00"))
    assert feb.avg_sales_per_month == jun.avg_sales_per_month == D("22.50")
    assert {(r.first_sale_month, r.last_sale_month) for r in (feb, jun)} == {("2025-02", "2025-06")}
    assert feb.full_name == "P1 Seller"


def test_salesperson_in_two_stores_has_separate_figures() -> None:
    rows = team([sale("100.00", "2025-01-05", store=1, person=3),
                 sale("300.00", "2025-02-05", store=1, person=3),
                 sale("40.00", "2025-02-06", store=2, person=3),
                 sale("60.00", "2025-02-07", store=2, person=1)])
    assert set(rows) == {(1, 3, "2025-01"), (1, 3, "2025-02"), (2, 3, "2025-02"), (2, 1, "2025-02")}
    s1, s2 = rows[(1, 3, "2025-02")], rows[(2, 3, "2025-02")]
    assert (s1.top_performance_rank, s2.top_performance_rank) == (1, 2)
    assert (s1.avg_sales_per_month, s2.avg_sales_per_month) == (D("200.00"), D("40.00"))
    assert (s1.year_to_date_sales, s2.year_to_date_sales) == (D("400.00"), D("40.00"))
    assert (s1.sales_growth_rate, s2.sales_growth_rate) == (D("200.00"), None)
    assert (s1.first_sale_month, s2.first_sale_month) == ("2025-01", "2025-02")
    assert (s1.sales_contribution_percentage, s2.sales_contribution_percentage) == (
        D("100.00"), D("40.00"))


def test_half_up_rounding_is_exact() -> None:
    assert ratio(5, 1000) == D("0.01")  # 0.005
    assert ratio(2, 3) == D("0.67")
    assert ratio(1125, 1000) == D("1.13")
    assert ratio(-5, 1000) == D("-0.01")  # half away from zero, like SQL ROUND
    assert ratio(1, 3) == D("0.33")
    assert ratio(10**30 + 5, 10**32) == D("0.01")  # beyond Decimal's default precision
    # through the mart: 0.50 × 0.01 = 0.005, 112.50 × 0.01 = 1.125, 2.00 / 3 sales
    assert team([sale("0.50")])[(1, 1, "2025-01")].incentive == D("0.01")
    assert team([sale("112.50")])[(1, 1, "2025-01")].incentive == D("1.13")
    row = team([sale("0.50"), sale("0.50"), sale("1.00")])[(1, 1, "2025-01")]
    assert row.avg_transaction_value == D("0.67")
    shares = team([sale("1.00", person=1), sale("2.00", person=2)])
    assert shares[(1, 2, "2025-01")].sales_contribution_percentage == D("66.67")


def test_zero_total_store_month_has_null_contribution() -> None:
    row = team([sale("0.00")])[(1, 1, "2025-01")]
    assert row.sales_contribution_percentage is None
    assert row.top_performance_rank == 1 and row.incentive == D("0.00")


# --- customers_data_mart ----------------------------------------------------------------------


def test_customer_lifetime_columns_repeat_on_every_month() -> None:
    rows = customers([sale("100.00", "2025-01-01"), sale("50.00", "2025-01-11"),
                      sale("250.00", "2025-03-03")])
    jan, mar = rows[(1, "2025-01")], rows[(1, "2025-03")]
    assert (jan.total_sales, mar.total_sales) == (D("150.00"), D("250.00"))
    for r in (jan, mar):
        assert r.customer_lifetime_value == D("400.00")
        assert (r.first_purchase_month, r.last_purchase_month) == ("2025-01", "2025-03")
        assert r.purchase_frequency == 3
        assert r.monetary_value == D("133.33")
        assert r.avg_monthly_spending == D("200.00")
        assert r.max_single_transaction == D("250.00")
        assert r.avg_time_between_purchases == D("30.50")  # 61 days / 2 gaps
        assert (r.full_name, r.address, r.phone_number) == ("Asha Rao", "Delhi, 110011",
                                                            "9100000001")


def test_one_purchase_customer_has_no_gap() -> None:
    row = customers([sale("42.00")])[(1, "2025-01")]
    assert row.purchase_frequency == 1
    assert row.avg_time_between_purchases is None
    assert row.monetary_value == row.avg_monthly_spending == D("42.00")


def test_average_gap_is_rounded() -> None:
    days = ["2025-01-01", "2025-01-01", "2025-01-02", "2025-01-03"]
    row = customers([sale("1.00", d) for d in days])[(1, "2025-01")]
    assert row.avg_time_between_purchases == D("0.67")


def test_inactive_after_more_than_90_days() -> None:
    last = date(2025, 1, 1)
    active = customers([sale("1.00", last.isoformat())], as_of=last + timedelta(days=90))
    inactive = customers([sale("1.00", last.isoformat())], as_of=last + timedelta(days=91))
    assert active[(1, "2025-01")].inactive_status is False
    assert inactive[(1, "2025-01")].inactive_status is True


def test_as_of_defaults_to_the_latest_sale() -> None:
    rows = customers([sale("1.00", "2025-01-01", customer=1),
                      sale("1.00", "2025-04-01", customer=2),   # 90 days later: the clock
                      sale("1.00", "2024-12-31", customer=2)])
    assert rows[(1, "2025-01")].inactive_status is False
    rows = customers([sale("1.00", "2025-01-01", customer=1),
                      sale("1.00", "2025-04-02", customer=2)])
    assert rows[(1, "2025-01")].inactive_status is True
    assert rows[(2, "2025-04")].inactive_status is False


@pytest.mark.parametrize(("amount", "expected"), [
    ("1999.99", "Occasional"), ("2000.00", "Regular"), ("9999.99", "Regular"),
    ("10000.00", "Premium"), ("0.01", "Occasional"),
])
def test_segment_thresholds_are_inclusive(amount: str, expected: str) -> None:
    assert customers([sale(amount)])[(1, "2025-01")].customer_segment == expected


def test_unknown_dimension_records_give_null_names() -> None:
    crow = customers([sale("5.00", customer=77)])[(77, "2025-01")]
    assert (crow.full_name, crow.address, crow.phone_number) == (None, None, None)
    assert crow.total_sales == D("5.00")
    trow = team([sale("5.00", person=99)])[(1, 99, "2025-01")]
    assert trow.full_name is None and trow.total_sales == D("5.00")


def test_data_as_of_and_empty_input() -> None:
    with pytest.raises(ValueError):
        data_as_of([])
    assert customer_rows([], CUSTOMERS, MartRules()) == []
    assert team_rows([], PEOPLE, MartRules()) == []


# --- partial aggregates -----------------------------------------------------------------------


def test_partial_aggregates_merge_to_the_same_rows() -> None:
    sales = [sale(f"{10 + i}.25", f"2025-0{1 + i % 3}-{1 + i:02d}", customer=1 + i % 2,
                  store=1 + i % 2, person=1 + i % 3) for i in range(12)]
    whole_c, whole_t = aggregate(sales)
    part_c: list[CustomerMonth] = []
    part_t: list[TeamMonth] = []
    for partition in (sales[:5], sales[5:9], sales[9:]):
        c, t = aggregate(partition)
        part_c += c.values()
        part_t += t.values()
    part_c.append(CustomerMonth(2, "2024-01"))  # an empty partial never makes a row
    part_t.append(TeamMonth(9, 9, "2024-01"))
    before = copy.deepcopy(part_c)
    rules, as_of = MartRules(), date(2025, 6, 1)
    split = Counter((a.customer_id, a.month) for a in part_c)
    assert max(split.values()) > 1 and len(split) == len(whole_c) + 1  # keys really are split
    assert max(Counter((a.store_id, a.sales_person_id, a.month) for a in part_t).values()) > 1
    assert (customer_rows(part_c, CUSTOMERS, rules, as_of)
            == customer_rows(whole_c.values(), CUSTOMERS, rules, as_of))
    assert team_rows(part_t, PEOPLE, rules) == team_rows(whole_t.values(), PEOPLE, rules)
    assert part_c == before  # inputs are not mutated by the merge


# --- configurable rules -----------------------------------------------------------------------


def test_incentive_rate_is_configurable() -> None:
    rows = team([sale("250.00")], MartRules(incentive_rate=D("0.025")))
    assert rows[(1, 1, "2025-01")].incentive == D("6.25")


def test_inactivity_days_and_thresholds_are_configurable() -> None:
    rules = MartRules(inactive_after_days=30, premium_threshold=D("100.00"),
                      regular_threshold=D("50.00"))
    rows = customers([sale("100.00", "2025-01-01")], rules, as_of=date(2025, 2, 1))
    assert rows[(1, "2025-01")].inactive_status is True  # 31 days > 30
    assert rows[(1, "2025-01")].customer_segment == "Premium"


def test_configured_as_of_overrides_the_data_clock() -> None:
    rules = MartRules(as_of=date(2025, 1, 10))
    rows = customers([sale("1.00", "2025-01-01"), sale("1.00", "2025-09-01", customer=2)], rules)
    assert rows[(1, "2025-01")].inactive_status is False
    rows = customers([sale("1.00", "2025-01-01")], rules, as_of=date(2026, 1, 1))
    assert rows[(1, "2025-01")].inactive_status is False
    assert replace(rules, as_of=None).resolve_as_of(date(2026, 1, 1)) == date(2026, 1, 1)


def test_rules_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AS_OF", "INACTIVE_AFTER_DAYS", "INCENTIVE_RATE"):
        monkeypatch.delenv(f"SALESFLOW_{name}", raising=False)
    settings = Settings(_env_file=None, as_of=date(2025, 5, 1), inactive_after_days=10,
                        premium_threshold=D("500.00"), regular_threshold=D("100.00"),
                        incentive_rate=D("0.05"))
    assert MartRules.from_settings(settings) == MartRules(10, D("500.00"), D("100.00"),
                                                          D("0.05"), date(2025, 5, 1))
    assert MartRules.from_settings(Settings(_env_file=None)).incentive_rate == D("0.01")


def test_rules_refuse_floats() -> None:
    with pytest.raises(TypeError):
        MartRules(incentive_rate=0.01)  # type: ignore[arg-type]
