"""The anomaly rules (docs/spec/anomalies.md) as pure, exact functions.

A flag is not a rejection: flagged sales are valid and counted as usual. The stream app
decides `price_off_list` when it accepts a sale (it keeps the flagged ones in its
`price_flags` table, and every accepted sale's list price travels in `<ns>.sales.valid`); the
mart builder and the rebuild evaluate all four rules over the same aggregates with these same
functions, so both paths flag the same rows. Every comparison is made on integers or exact
fractions, before any rounding; a value exactly at a threshold is not flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import date

    from salesflow.settings import Settings

PRICE_OFF_LIST = "price_off_list"
MULTI_STORE_DAY = "multi_store_day"
CUSTOMER_SPEND_SPIKE = "customer_spend_spike"
SALESPERSON_SPIKE = "salesperson_spike"
RULES = (PRICE_OFF_LIST, MULTI_STORE_DAY, CUSTOMER_SPEND_SPIKE, SALESPERSON_SPIKE)


@dataclass(frozen=True, slots=True)
class AnomalyRules:
    """The thresholds (`SALESFLOW_ANOMALY_*`); defaults are the spec's."""

    price_tolerance_percent: Decimal = Decimal(20)
    multi_store_min_stores: int = 3
    spend_spike_factor: Decimal = Decimal(5)
    spend_spike_min_months: int = 3
    salesperson_spike_factor: Decimal = Decimal(3)
    salesperson_spike_months: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> AnomalyRules:
        return cls(settings.anomaly_price_tolerance_percent,
                   settings.anomaly_multi_store_min_stores,
                   settings.anomaly_spend_spike_factor,
                   settings.anomaly_spend_spike_min_months,
                   settings.anomaly_salesperson_spike_factor,
                   settings.anomaly_salesperson_spike_months)

    def price_off_list(self, price_cents: int, list_cents: int) -> bool:
        """abs(price − list) > tolerance % × list."""
        return Fraction(abs(price_cents - list_cents) * 100) > \
            Fraction(self.price_tolerance_percent) * list_cents

    def multi_store_day(self, stores: int) -> bool:
        """Valid sales in this many distinct stores on one date: at least the minimum."""
        return stores >= self.multi_store_min_stores

    def customer_spend_spike(self, month_cents: int, other_months: Iterable[int]
                             ) -> Fraction | None:
        """The mean of the other months when `month_cents` spikes above it, else None."""
        others = list(other_months)
        return self.spend_spike_of(month_cents, sum(others), len(others))

    def spend_spike_of(self, month_cents: int, others_cents: int, others: int
                       ) -> Fraction | None:
        """`customer_spend_spike` given the other months' sum and number (a flush asks this
        for every month of every changed customer: integers first, a Fraction only for a
        spike)."""
        if others < self.spend_spike_min_months:
            return None
        num, den = self.spend_spike_factor.as_integer_ratio()
        # month > factor × others_cents / others, multiplied out (others, den > 0)
        if month_cents * others * den <= num * others_cents:
            return None
        return Fraction(others_cents, others)

    def salesperson_spike(self, month: str, totals: Mapping[str, int]) -> Fraction | None:
        """The mean of the calendar months before `month` when each was > 0 and the month
        spikes above their mean, else None (`totals`: YYYY-MM -> cents)."""
        before, current = [], month
        for _ in range(self.salesperson_spike_months):
            current = previous_month(current)
            total = totals.get(current, 0)
            if total <= 0:
                return None
            before.append(total)
        mean = Fraction(sum(before), len(before))
        return mean if totals.get(month, 0) > Fraction(self.salesperson_spike_factor) * mean \
            else None


def previous_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year - 1:04d}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"


def day_key(d: date) -> str:
    """`YYYY-MM-DD`: the period of a day's flag."""
    return d.isoformat()

