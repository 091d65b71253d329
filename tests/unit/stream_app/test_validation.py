from datetime import date

import pytest

from salesflow.dead_letters import Reason
from salesflow.sale import ProductPrice, Sale
from stream_app.validation import StaticDimensions, validate

TODAY = date(2026, 11, 26)
DIMS = StaticDimensions(customers={1, 2}, stores={121}, sales_people={3},
                        products={"sugar": ProductPrice(5000)})
GOOD = Sale("s1", 1, 121, "sugar", date(2025, 1, 31), 3, 5000, 2, 10000)


def reason(**changes):
    rejection = validate(GOOD.replace(**changes), DIMS, TODAY)
    return rejection and rejection.reason


def test_good_sale_passes():
    assert reason() is None


@pytest.mark.parametrize("changes,expected", [
    ({"sale_id": ""}, Reason.MISSING_FIELD),
    ({"product_name": "  "}, Reason.MISSING_FIELD),
    ({"customer_id": 0}, Reason.OUT_OF_BOUNDS),
    ({"store_id": 2_147_483_648}, Reason.OUT_OF_BOUNDS),
    ({"sales_person_id": -1}, Reason.OUT_OF_BOUNDS),
    ({"quantity": 1_000_001, "total_cost": 5_000_050_000}, Reason.OUT_OF_BOUNDS),
    ({"price_cents": 10_000_000_000}, Reason.OUT_OF_BOUNDS),
    ({"total_cents": 60_000_000_000_000}, Reason.OUT_OF_BOUNDS),
    ({"product_name": "s" * 256}, Reason.OUT_OF_BOUNDS),
    ({"sale_id": "x" * 256}, Reason.OUT_OF_BOUNDS),
    ({"quantity": 0}, Reason.NON_POSITIVE_QUANTITY),
    ({"quantity": -2, "total_cents": -10000}, Reason.NON_POSITIVE_QUANTITY),
    ({"price_cents": 0, "total_cents": 0}, Reason.NON_POSITIVE_PRICE),
    ({"price_cents": -100, "total_cents": -200}, Reason.NON_POSITIVE_PRICE),
    ({"total_cents": 10002}, Reason.TOTAL_MISMATCH),
    ({"total_cents": 9998}, Reason.TOTAL_MISMATCH),
    ({"sales_date": date(1999, 12, 31)}, Reason.DATE_OUT_OF_RANGE),
    ({"sales_date": date(2026, 11, 28)}, Reason.DATE_OUT_OF_RANGE),
    ({"customer_id": 99999}, Reason.UNKNOWN_CUSTOMER),
    ({"store_id": 999}, Reason.UNKNOWN_STORE),
    ({"sales_person_id": 77}, Reason.UNKNOWN_SALES_PERSON),
    ({"product_name": "caviar"}, Reason.UNKNOWN_PRODUCT),
    ({"product_name": "sugar\u202e "}, Reason.UNKNOWN_PRODUCT),  # no normalisation
    ({"product_name": "Sugar"}, Reason.UNKNOWN_PRODUCT),
])
def test_each_rule(changes, expected):
    if "total_cost" in changes:
        changes["total_cents"] = changes.pop("total_cost")
    assert reason(**changes) is expected


def test_boundaries_that_pass():
    assert reason(total_cents=10001) is None  # within the 0.01 tolerance
    assert reason(sales_date=date(2026, 11, 27)) is None  # today + 1 day
    assert reason(sales_date=date(2000, 1, 1)) is None
    big = GOOD.replace(quantity=1_000_000, price_cents=1, total_cents=1_000_000,
                  customer_id=1, sale_id="y" * 255)
    assert validate(big, DIMS, TODAY) is None
    top = GOOD.replace(quantity=1, price_cents=9_999_999_999, total_cents=9_999_999_999)
    assert validate(top, DIMS, TODAY) is None


def test_first_failure_names_the_reason():
    # Breaks quantity, price, total and every reference at once: quantity is checked first.
    assert reason(quantity=0, price_cents=0, customer_id=5, store_id=5) \
        is Reason.NON_POSITIVE_QUANTITY
    assert reason(customer_id=5, store_id=5, product_name="x") is Reason.UNKNOWN_CUSTOMER
    assert reason(store_id=5, product_name="x") is Reason.UNKNOWN_STORE
    assert reason(sales_date=date(1990, 1, 1), customer_id=5) is Reason.DATE_OUT_OF_RANGE
    assert reason(customer_id=0, quantity=0) is Reason.OUT_OF_BOUNDS  # bounds before rules


def test_the_fast_path_gives_the_rules_verdicts():
    """`Rules.check` (one expression for the common case) agrees with `validate` (the rules
    one by one) on sales near every edge."""
    import random

    from stream_app.validation import Rules

    rng = random.Random(7)
    rules = Rules(DIMS, TODAY)
    edges = {
        "sale_id": ["s1", "", " ", "x" * 255, "x" * 256],
        "customer_id": [0, 1, 2, 99999, 2_147_483_647, 2_147_483_648, -5],
        "store_id": [0, 121, 999, 2_147_483_648],
        "product_name": ["sugar", "", "\t", "s" * 256, "caviar"],
        "sales_date": [date(1999, 12, 31), date(2000, 1, 1), date(2026, 11, 27),
                       date(2026, 11, 28), date(2025, 1, 31)],
        "sales_person_id": [0, 3, 77],
        "price_cents": [-1, 0, 1, 5000, 9_999_999_999, 10_000_000_000],
        "quantity": [-2, 0, 1, 2, 1_000_000, 1_000_001],
        "total_cents": [-10000, 0, 9998, 9999, 10000, 10001, 10002, 9_999_999_999,
                        10_000_000_000],
    }
    for _ in range(20_000):
        sale = GOOD.replace(**{k: rng.choice(v) for k, v in edges.items()
                               if rng.random() < 0.3})
        assert rules.check(sale) == validate(sale, DIMS, TODAY), sale
