from datetime import date
from decimal import Decimal

import pytest

from producers.rows import (
    content_key,
    derived_sale_id,
    dimension_row,
    parse_dimension,
    parse_sale,
    parse_sale_row,
)
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


# Finding 7: every spelling Python's int / Decimal / date.fromisoformat accepted but the data
# contract calls unparseable, field by field.
UNPARSEABLE = [
    ("price", "5_0"), ("price", "1e3"), ("price", "٥٠"), ("price", " 50.00"),
    ("price", "50.00 "), ("price", "+50"), ("price", "NaN"), ("price", "Infinity"),
    ("price", "abc"), ("price", ".5"), ("price", "50,00"), ("total_cost", "1.005"),
    ("total_cost", "1e20"), ("total_cost", "3_00.00"), ("customer_id", "1_2"),
    ("customer_id", "٥٠"), ("customer_id", " 4"), ("customer_id", "4 "), ("customer_id", "+4"),
    ("customer_id", "4.0"), ("customer_id", "x"), ("customer_id", "１２"),
    ("store_id", "1_21"), ("sales_person_id", "1e0"), ("quantity", "1.5"),
    ("quantity", "6_0"), ("quantity", "٦"), ("quantity", " 6"), ("sales_date", "20260119"),
    ("sales_date", "2026-W03-1"), ("sales_date", "2025-13-45"), ("sales_date", " 2025-09-29"),
    ("sales_date", "2025-09-29 "), ("sales_date", "2025-09-29T10:00"),
    ("sales_date", "2025-9-29"), ("sales_date", "٢٠٢٥-٠٩-٢٩"),
]


@pytest.mark.parametrize("field,value", UNPARSEABLE)
def test_unparseable(field, value):
    got = parse_sale({**GOOD, field: value})
    assert isinstance(got, Rejection) and got.reason is Reason.UNPARSEABLE, got
    assert got.message.startswith(field)


OUT_OF_BOUNDS = [
    ("customer_id", "3000000000"), ("customer_id", "0"), ("customer_id", "-4"),
    ("store_id", "2147483648"), ("sales_person_id", "99999999999999999999999"),
    ("quantity", "1000001"), ("quantity", str(2**40)), ("quantity", "-3000000000"),
    ("price", "100000000.00"), ("total_cost", "999999999999.99"),
    ("product_name", "x" * 256), ("sale_id", "s" * 256),
]


@pytest.mark.parametrize("field,value", OUT_OF_BOUNDS)
def test_out_of_bounds(field, value):
    got = parse_sale({**GOOD, field: value})
    assert isinstance(got, Rejection) and got.reason is Reason.OUT_OF_BOUNDS, got
    assert field in got.message


def test_within_bounds_and_lenient_only_where_the_contract_is():
    edge = {**GOOD, "customer_id": "2147483647", "quantity": "1000000", "price": "50",
            "total_cost": "99999999.99", "product_name": "é" * 255}
    assert isinstance(parse_sale(edge), dict)
    assert parse_sale({**GOOD, "price": "50.0"})["price"] == Decimal("50.00")


def test_missing_field_wins_over_unparseable_and_unparseable_over_out_of_bounds():
    assert parse_sale({**GOOD, "customer_id": "", "price": "abc"}).reason is \
        Reason.MISSING_FIELD
    assert parse_sale({**GOOD, "customer_id": "3000000000", "price": "abc"}).reason is \
        Reason.UNPARSEABLE


def test_rule_violations_are_left_to_the_stream_app():
    # The producer only checks that a row is a sale; business rules belong to validation.
    assert isinstance(parse_sale({**GOOD, "quantity": "0"}), dict)
    assert isinstance(parse_sale({**GOOD, "quantity": "-2"}), dict)  # read, then rejected
    assert isinstance(parse_sale({**GOOD, "total_cost": "1.00"}), dict)


def test_derived_ids_follow_the_values_not_their_spelling():
    row = {k: v for k, v in GOOD.items() if k != "sale_id"}
    a = parse_sale_row(row, with_id=False)
    b = parse_sale_row({**row, "price": "50", "total_cost": "300.0", "customer_id": "04"},
                       with_id=False)
    c = parse_sale_row({**row, "quantity": "5", "total_cost": "250.00"}, with_id=False)
    assert content_key(a) == content_key(b) != content_key(c)
    assert a.sale_id == ""
    first, second = derived_sale_id(content_key(a), 1), derived_sale_id(content_key(a), 2)
    assert first != second and first == derived_sale_id(content_key(b), 1)
    assert first.startswith("row-") and len(first) == 36 and second == f"{first}-2"


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


CUSTOMER = {"customer_id": "7", "first_name": "Ira", "last_name": "Bose", "address": "Delhi",
            "pincode": "110011", "phone_number": "9100000000",
            "customer_joining_date": "2025-01-01"}
TEAM = {"id": "3", "first_name": "Amit", "last_name": "Sharma", "manager_id": "10",
        "is_manager": "N", "address": "Delhi", "pincode": "122007",
        "joining_date": "2020-05-01"}


@pytest.mark.parametrize("name,row,reason", [
    ("customer", {**CUSTOMER, "customer_id": ""}, Reason.MISSING_FIELD),
    ("customer", {**CUSTOMER, "customer_id": "1_2"}, Reason.UNPARSEABLE),
    ("customer", {**CUSTOMER, "customer_id": " 7"}, Reason.UNPARSEABLE),
    ("customer", {**CUSTOMER, "customer_joining_date": "20250101"}, Reason.UNPARSEABLE),
    ("customer", {**CUSTOMER, "customer_id": "3000000000"}, Reason.OUT_OF_BOUNDS),
    ("customer", {**CUSTOMER, "customer_id": "0"}, Reason.OUT_OF_BOUNDS),
    ("customer", {**CUSTOMER, "first_name": "n" * 256}, Reason.OUT_OF_BOUNDS),
    ("customer", {**CUSTOMER, "address": "a" * 300}, Reason.OUT_OF_BOUNDS),
    ("sales_team", {**TEAM, "manager_id": "3000000000"}, Reason.OUT_OF_BOUNDS),
    ("sales_team", {**TEAM, "manager_id": "1e1"}, Reason.UNPARSEABLE),
    ("product", {"id": "1", "name": "sugar", "current_price": "1e3"}, Reason.UNPARSEABLE),
    ("product", {"id": "1", "name": "sugar", "current_price": "100000000.00"},
     Reason.OUT_OF_BOUNDS),
    ("product", {"id": "1", "name": "sugar", "current_price": "-1.00"}, Reason.OUT_OF_BOUNDS),
    ("product", {"id": "1", "name": "", "current_price": "1.00"}, Reason.MISSING_FIELD),
])
def test_dimension_rows_that_are_not_records(name, row, reason):
    got = dimension_row(name, row)
    assert isinstance(got, Rejection) and got.reason is reason, got


def test_dimension_row_at_the_bounds():
    got = dimension_row("customer", {**CUSTOMER, "customer_id": "2147483647",
                                     "first_name": "é" * 255, "customer_joining_date": ""})
    assert not isinstance(got, Rejection)
    assert got.id == 2147483647 and got.record["customer_joining_date"] is None
    team = dimension_row("sales_team", {**TEAM, "manager_id": ""})
    assert team.record["manager_id"] is None
