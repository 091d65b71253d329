from datetime import date
from decimal import Decimal

import pytest

from salesflow.dead_letters import Reason
from stream_app.validation import Dimensions, validate

TODAY = date(2026, 11, 26)
DIMS = Dimensions(customers={1, 2}, stores={121}, sales_people={3}, products={"sugar"})
GOOD = {"sale_id": "s1", "customer_id": 1, "store_id": 121, "product_name": "sugar",
        "sales_date": date(2025, 1, 31), "sales_person_id": 3, "price": Decimal("50.00"),
        "quantity": 2, "total_cost": Decimal("100.00")}


def reason(**changes):
    rejection = validate({**GOOD, **changes}, DIMS, TODAY)
    return rejection and rejection.reason


def test_good_sale_passes():
    assert reason() is None


@pytest.mark.parametrize("changes,expected", [
    ({"sale_id": ""}, Reason.MISSING_FIELD),
    ({"product_name": "  "}, Reason.MISSING_FIELD),
    ({"price": Decimal("1.005"), "total_cost": Decimal("2.01")}, Reason.UNPARSEABLE),
    ({"price": Decimal("NaN")}, Reason.UNPARSEABLE),
    ({"quantity": 0}, Reason.NON_POSITIVE_QUANTITY),
    ({"quantity": -2, "total_cost": Decimal("-100.00")}, Reason.NON_POSITIVE_QUANTITY),
    ({"price": Decimal("0.00"), "total_cost": Decimal("0.00")}, Reason.NON_POSITIVE_PRICE),
    ({"price": Decimal("-1.00"), "total_cost": Decimal("-2.00")}, Reason.NON_POSITIVE_PRICE),
    ({"total_cost": Decimal("100.02")}, Reason.TOTAL_MISMATCH),
    ({"total_cost": Decimal("99.98")}, Reason.TOTAL_MISMATCH),
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
    assert reason(**changes) is expected


def test_boundaries_that_pass():
    assert reason(total_cost=Decimal("100.01")) is None  # within the 0.01 tolerance
    assert reason(sales_date=date(2026, 11, 27)) is None  # today + 1 day
    assert reason(sales_date=date(2000, 1, 1)) is None


def test_first_failure_names_the_reason():
    # Breaks quantity, price, total and every reference at once: quantity is checked first.
    assert reason(quantity=0, price=Decimal("0.00"), customer_id=5, store_id=5) \
        is Reason.NON_POSITIVE_QUANTITY
    assert reason(customer_id=5, store_id=5, product_name="x") is Reason.UNKNOWN_CUSTOMER
    assert reason(store_id=5, product_name="x") is Reason.UNKNOWN_STORE
    assert reason(sales_date=date(1990, 1, 1), customer_id=5) is Reason.DATE_OUT_OF_RANGE
