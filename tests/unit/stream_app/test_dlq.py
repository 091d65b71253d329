"""`salesflow dlq`: classifying, filtering, formatting and planning a replay (no Kafka)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter, Reason
from salesflow.errors import ConfigError
from salesflow.kafka import partition_for
from stream_app.dlq import (
    SKIP_DUPLICATE,
    SKIP_PRODUCER_SIDE,
    SKIP_UNDECODABLE,
    Letter,
    ReplaySummary,
    as_dict,
    is_producer_side,
    origin,
    parse_reason,
    plan_replay,
    preview,
    reason_counts,
    select,
    when,
)

CODEC = Codec()
SALE = {"sale_id": "s-1", "customer_id": 7, "store_id": 121, "product_name": "sugar",
        "sales_date": date(2025, 1, 2), "sales_person_id": 1, "price": Decimal("50.00"),
        "quantity": 1, "total_cost": Decimal("50.00")}


def stream_letter(reason=Reason.UNKNOWN_CUSTOMER, sale=SALE, partition=3, offset=10,
                  key=None, at="2026-11-26T01:00:00.000+00:00", dlq_offset=0):
    value = CODEC.encode("sale", sale)
    dead = DeadLetter.from_message(value, key, DeadLetter(
        value=value, key=key, reason=reason, message="customer_id 7 is not in the dimension",
        source="ns.sales", partition=partition, offset=offset, fingerprint=value[2:10],
        rejected_at=at, sale_id=sale["sale_id"]).headers())
    return Letter(dead, partition, dlq_offset)


def file_letter(reason=Reason.MISSING_FIELD, at="2026-11-26T00:00:00.000+00:00"):
    row = b'x-9,,121,"maida, fine",2025-12-30,2,20.00,4,80.00'
    dead = DeadLetter(value=row, key=b"x-9", reason=reason, message="empty or absent: "
                      "customer_id", source="data/sales.csv", line=12, rejected_at=at,
                      sale_id="x-9")
    return Letter(DeadLetter.from_message(row, b"x-9", dead.headers()), 0, 5)


def garbage_letter():
    dead = DeadLetter(value=b"\x00\xffjunk", key=None, reason=Reason.UNDECODABLE,
                      message="not an Avro single-object message", source="ns.sales",
                      partition=1, offset=4, rejected_at="2026-11-26T02:00:00.000+00:00")
    return Letter(DeadLetter.from_message(dead.value, None, dead.headers()), 1, 0)


def test_parse_reason_accepts_codes_and_names_the_valid_ones():
    assert parse_reason(None) is None
    assert parse_reason(" Unknown_Customer") is Reason.UNKNOWN_CUSTOMER
    with pytest.raises(ConfigError, match=r"unknown reason 'nope'.*unknown_customer"):
        parse_reason("nope")


def test_select_filters_by_reason_and_orders_by_rejection_time():
    late = stream_letter(at="2026-11-26T03:00:00.000+00:00")
    early = file_letter()
    junk = garbage_letter()
    assert [x.dead.rejected_at for x in select([late, junk, early])] == sorted(
        x.dead.rejected_at for x in (late, junk, early))
    assert select([late, junk, early], Reason.UNKNOWN_CUSTOMER) == [late]
    assert select([late, junk, early], Reason.TOTAL_MISMATCH) == []
    assert reason_counts([late, junk, early]) == {"unknown_customer": 1, "undecodable": 1,
                                                  "missing_field": 1}


def test_origin_and_side():
    assert origin(file_letter().dead) == "data/sales.csv:12"
    assert origin(stream_letter().dead) == "ns.sales/3/10"
    assert is_producer_side(file_letter().dead)
    assert not is_producer_side(stream_letter().dead)
    assert not is_producer_side(garbage_letter().dead)


def test_preview_shows_rows_as_text_and_binary_as_a_size():
    assert preview(file_letter().dead).startswith('x-9,,121,"maida, fine"')
    assert preview(file_letter().dead, width=10) == 'x-9,,121,…'
    assert preview(stream_letter().dead).endswith("bytes Avro>")
    assert preview(garbage_letter().dead) == "<6 bytes binary>"


def test_as_dict_is_json_ready():
    import json

    d = as_dict(stream_letter(key=b"s-1"))
    assert d["reason"] == "unknown_customer" and d["sale_id"] == "s-1"
    assert d["side"] == "stream" and d["origin"] == "ns.sales/3/10" and d["key"] == "s-1"
    assert bytes.fromhex(d["value_hex"]) == CODEC.encode("sale", SALE)
    f = as_dict(file_letter())
    assert f["side"] == "producer" and f["row"].startswith("x-9,,") and f["line"] == 12
    json.dumps([d, f, as_dict(garbage_letter())])


def test_plan_replays_stream_side_letters_on_their_partition_once():
    a = stream_letter(partition=3, key=b"s-1")
    again = stream_letter(partition=3, key=b"s-1", dlq_offset=7)  # rejected a second time
    other = stream_letter(sale={**SALE, "sale_id": "s-2"}, partition=None, key=None)
    truncated = Letter(DeadLetter(value=a.dead.value[:-3], key=None,
                                  reason=Reason.UNDECODABLE, message="corrupt",
                                  source="ns.sales", partition=0, offset=1), 0, 1)
    plan = plan_replay([a, again, other, file_letter(), garbage_letter(), truncated], 6)
    assert plan.send == [(b"s-1", a.dead.value, 3),
                         (None, other.dead.value, partition_for("s-2", 6))]
    assert plan.skipped == {SKIP_DUPLICATE: 1, SKIP_PRODUCER_SIDE: 1, SKIP_UNDECODABLE: 2}


def test_plan_ignores_a_partition_header_beyond_the_topic():
    letter = stream_letter(partition=9)
    assert plan_replay([letter], 6).send[0][2] == partition_for("s-1", 6)


def test_summary_line():
    from collections import Counter

    s = ReplaySummary(5, 2, Counter({SKIP_PRODUCER_SIDE: 3}), "ns.sales",
                      reason=Reason.UNKNOWN_CUSTOMER)
    assert s.line() == ("5 dead letter(s) with reason unknown_customer: replayed 2 to "
                        f"ns.sales; skipped 3 {SKIP_PRODUCER_SIDE}")
    assert ReplaySummary(0, 0, Counter(), "ns.sales", dry_run=True).line() == \
        "0 dead letter(s): would replay 0 to ns.sales"


def test_when_is_short_utc():
    assert when("2026-11-26T03:55:48.203+00:00") == "2026-11-26 03:55:48"
    assert when("2026-11-26T05:55:48+02:00") == "2026-11-26 03:55:48"
    assert when("") == "-" and when("yesterday") == "yesterday"
