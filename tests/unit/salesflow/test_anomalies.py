"""The anomaly rules at their edges (docs/spec/anomalies.md): exactly at a threshold is not
flagged, one cent or one store past it is."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

from salesflow.anomalies import AnomalyRules
from salesflow.sale import ProductPrice

RULES = AnomalyRules()


def test_price_off_list_is_strictly_beyond_the_tolerance():
    assert not RULES.price_off_list(12000, 10000)  # exactly +20 %
    assert not RULES.price_off_list(8000, 10000)  # exactly -20 %
    assert RULES.price_off_list(12001, 10000)
    assert RULES.price_off_list(7999, 10000)
    assert not RULES.price_off_list(10000, 10000)
    assert RULES.price_off_list(1, 0)  # anything above a list price of 0
    assert not AnomalyRules(price_tolerance_percent=Decimal("12.5")).price_off_list(1125, 1000)
    assert AnomalyRules(price_tolerance_percent=Decimal("12.5")).price_off_list(1126, 1000)


def test_the_list_price_is_the_old_one_before_the_price_changed():
    product = ProductPrice(current_cents=5000, old_cents=4000, updated_date=date(2025, 6, 1))
    assert product.list_cents(date(2025, 5, 31)) == 4000
    assert product.list_cents(date(2025, 6, 1)) == 5000  # on the day: the current price
    assert ProductPrice(5000, None, date(2025, 6, 1)).list_cents(date(2025, 1, 1)) == 5000
    assert ProductPrice(5000, 4000, None).list_cents(date(2025, 1, 1)) == 5000


def test_multi_store_day_from_three_stores():
    assert not RULES.multi_store_day(2)
    assert RULES.multi_store_day(3)
    assert not AnomalyRules(multi_store_min_stores=4).multi_store_day(3)


def test_customer_spend_spike_needs_enough_other_months_and_is_strict():
    assert RULES.customer_spend_spike(50_001, [10_000, 10_000, 10_000]) == Fraction(10_000)
    assert RULES.customer_spend_spike(50_000, [10_000, 10_000, 10_000]) is None  # exactly 5 ×
    assert RULES.customer_spend_spike(10**9, [10_000, 10_000]) is None  # two months only
    # An exact mean, no rounding before the comparison: 5 × 10,001/3 = 16,668.33 cents
    assert RULES.customer_spend_spike(16_668, [10_000, 1, 0]) is None
    assert RULES.customer_spend_spike(16_669, [10_000, 1, 0]) == Fraction(10_001, 3)


def test_salesperson_spike_needs_three_calendar_months_before_all_above_zero():
    totals = {"2025-01": 100, "2025-02": 100, "2025-03": 100, "2025-04": 301}
    assert RULES.salesperson_spike("2025-04", totals) == Fraction(100)
    assert RULES.salesperson_spike("2025-04", totals | {"2025-04": 300}) is None  # exactly 3 ×
    assert RULES.salesperson_spike("2025-04", totals | {"2025-02": 0}) is None
    gap = {"2024-12": 100, "2025-01": 100, "2025-03": 100, "2025-04": 10_000}
    assert RULES.salesperson_spike("2025-04", gap) is None  # February had no sales
    across_years = {"2024-11": 10, "2024-12": 10, "2025-01": 10, "2025-02": 31}
    assert RULES.salesperson_spike("2025-02", across_years) == Fraction(10)


def test_a_late_sale_in_an_earlier_month_clears_a_spike():
    """Restatement: the mean grows with the late sale and the month no longer spikes."""
    before = {"2025-01": 100, "2025-02": 100, "2025-03": 100, "2025-04": 400}
    assert RULES.salesperson_spike("2025-04", before) is not None
    after = before | {"2025-02": 100 + 100}  # 3 × the mean is now exactly 400
    assert RULES.salesperson_spike("2025-04", after) is None
    assert RULES.customer_spend_spike(60_000, [10_000, 10_000, 10_000]) is not None
    assert RULES.customer_spend_spike(60_000, [10_000, 10_000, 10_000 + 6_000]) is None
