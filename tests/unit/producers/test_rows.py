from datetime import date
from decimal import Decimal

import pytest

from producers.rows import parse_dimension, parse_sale
from salesflow.dead_letters import Reason, Rejection

GOOD = {"sale_id": "s1", "customer_id": "4", "store_id": "121", "product_name": "sugar",
        "sales_date": "2025-09-29", "sales_person_id": "1", "price": "50.00",
        "quantity": "6", "total_cost": "300.00"}


def test_good_row():
    assert parse_sale(GOOD) == {
        "sale_id": "s1", "customer_id": 4, "store_id": 121, "product_name": "sugar",
        "sales_date": date(2025, 9, 29), "sales_person_id": 1, "price": Decimal("50.00"),
        "quantity": 6, "total_cost": Decimal("300.00")}


@pytest.mark.parametrize("field", list(GOOD))
def test_missing_field(field):
    for value in ("", "  ", None):
        got = parse_sale({**GOOD, field: value})
        assert isinstance(got, Rejection) and got.reason is Reason.MISSING_FIELD
        assert field in got.message


@pytest.mark.parametrize("field,value", [
    ("price", "abc"), ("sales_date", "2025-13-45"), ("quantity", "1.5"), ("customer_id", "x"),
    ("total_cost", "1.005"), ("price", "NaN"), ("price", "Infinity"),
    ("total_cost", "1e20"), ("quantity", str(2**40)),
])
def test_unparseable(field, value):
    got = parse_sale({**GOOD, field: value})
    assert isinstance(got, Rejection) and got.reason is Reason.UNPARSEABLE


def test_missing_field_wins_over_unparseable():
    got = parse_sale({**GOOD, "customer_id": "", "price": "abc"})
    assert got.reason is Reason.MISSING_FIELD


def test_rule_violations_are_left_to_the_stream_app():
    # The producer only checks that a row is a sale; business rules belong to validation.
    assert isinstance(parse_sale({**GOOD, "quantity": "0"}), dict)
    assert isinstance(parse_sale({**GOOD, "total_cost": "1.00"}), dict)


def test_dimensions():
    key, rec = parse_dimension("product", {
        "id": "6", "name": "clinic plus", "current_price": "1.50", "old_price": "",
        "created_date": "2022-05-15", "updated_date": "", "expiry_date": "2027-01-01"})
    assert key == 6 and rec["current_price"] == Decimal("1.50") and rec["old_price"] is None
    assert rec["updated_date"] is None and rec["expiry_date"] == date(2027, 1, 1)
    key, rec = parse_dimension("store", {
        "id": "125", "address": "Noida", "store_pincode": "201301",
        "store_manager_name": "Ishaan", "store_opening_date": "2024-12-01",
        "reviews": 'Small kiosk "near" the metro.'})
    assert key == 125 and rec["reviews"] == 'Small kiosk "near" the metro.'
    with pytest.raises(ValueError):
        parse_dimension("customer", {"customer_id": "x"})
