"""The pure parts of status, demo, export, tail and the Kafka tools: what the numbers mean."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from mart_builder.export import arrow_schema, write_csv
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter, Reason
from salesflow.errors import ConfigError, StackError
from salesflow.settings import describe_invalid, unknown_names
from salesflow.tables import PartitionCounts
from salesflow.topics import Topics
from salesflow_cli.demo import DemoNumbers, explain
from salesflow_cli.stack_verbs import tool_command
from salesflow_cli.status import Status, catch_up, duration, rate, sales_lag
from salesflow_cli.tail import describe, resolve
from stream_app.dlq import Letter, as_dict, summary


def counts(records_in: int, accepted: int) -> PartitionCounts:
    return PartitionCounts(records_in=records_in, accepted=accepted)


def test_rate_is_the_difference_over_the_last_minute() -> None:
    now = 1000.0
    history = {0: [(900.0, counts(100, 90)), (930.0, counts(400, 380)), (990.0, counts(1000,
                                                                                     950))],
               1: [(980.0, counts(60, 60))]}  # started within the minute: from zero
    in_rate, accepted_rate = rate(history, now)
    assert in_rate == pytest.approx((1000 - 400 + 60) / 60)  # from the counts of 930
    assert accepted_rate == pytest.approx((950 - 380 + 60) / 60)
    assert rate({}, now) is None
    idle = {0: [(100.0, counts(5, 5))]}
    assert rate(idle, now) == (0.0, 0.0)


def test_lag_in_sales_uses_each_partitions_packing() -> None:
    lag = {0: 10, 1: 4, 2: 3}
    processed = {0: 100, 1: 50, 2: 0}
    latest = {0: counts(50_000, 0), 1: counts(50, 0)}
    sales, estimated = sales_lag(lag, processed, latest)
    overall = 50_050 / 150
    assert sales == round(10 * 500 + 4 * 1 + 3 * overall) and estimated
    assert sales_lag({0: 2}, {}, {}) == (1000, True)  # nothing processed yet: the packing
    assert catch_up(0, None) == 0.0 and catch_up(100, 0) is None and catch_up(100, 50) == 2


def test_the_equation_counts_waiting_sales() -> None:
    report = Status(records_in=100, accepted=80, exact_replays=2, pending=18,
                    dead_lettered={})
    assert report.reconciled  # the old equation without `waiting` said it held, at 82 != 100
    report.pending = 0
    assert not report.reconciled
    assert duration(42) == "42 s" and duration(600) == "10 min 0 s"
    assert duration(7300) == "2 h 1 min"


def test_json_carries_namespace_time_and_topics() -> None:
    import json

    report = Status(namespace="ns", time="2026-01-01 00:00:00 UTC",
                    topics={"sales": "ns.sales"}, kafka_error="down")
    data = json.loads(report.to_json())
    assert data["namespace"] == "ns" and data["time"].endswith("UTC")
    assert data["topics"]["sales"] == "ns.sales" and data["healthy"] is False


def test_demo_explains_where_every_bad_row_went() -> None:
    lines = explain(DemoNumbers(rows=20_000, producer_dead_lettered=72, sent=19_928),
                    replays=33, stream_dead=298, waiting=0)
    text = "\n".join(lines)
    assert "72 had a missing field" in text and "33 were exact copies" in text
    assert "298 broke a rule" in text
    assert "holds 72 + 298 = 370 letters, and 19,597 sales are in the marts" in text


def test_unknown_setting_names_get_the_closest_real_one() -> None:
    found = dict(unknown_names(["SALESFLOW_MART_DB_ULR", "SALESFLOW_NAMESPACE", "PATH",
                                "SALESFLOW_SECRETS_DIR", "SALESFLOW_TEST_KAFKA_BOOTSTRAP",
                                "SALESFLOW_ZZZ"]))
    assert found == {"SALESFLOW_MART_DB_ULR": "SALESFLOW_MART_DB_URL",
                     "SALESFLOW_ZZZ": None}


def test_an_invalid_secret_value_is_never_repeated() -> None:
    from pydantic import ValidationError

    from salesflow.settings import Settings

    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, mart_db_password=["not", "text"])  # type: ignore[arg-type]
    line = describe_invalid(raised.value)
    assert "SALESFLOW_MART_DB_PASSWORD=(hidden)" in line and "not" not in line.split("(")[0]


def test_export_schema_keeps_money_exact(tmp_path: Path) -> None:
    import pyarrow as pa

    schema = arrow_schema("customers_data_mart")
    assert schema.field("customer_lifetime_value").type == pa.decimal128(14, 2)
    assert schema.field("inactive_status").type == pa.bool_()
    assert schema.field("purchase_frequency").type == pa.int64()
    path = tmp_path / "x.csv"
    write_csv(path, ["a", "b", "c"], [{"a": Decimal("1.10"), "b": None, "c": True}])
    assert path.read_text() == "a,b,c\n1.10,,true\n"


SALE = {"sale_id": "s-1", "customer_id": 7, "store_id": 121, "product_name": "sugar",
        "sales_date": __import__("datetime").date(2025, 3, 4), "sales_person_id": 2,
        "price": Decimal("50.00"), "quantity": 2, "total_cost": Decimal("100.00")}


def test_a_stream_side_letter_is_decoded() -> None:
    codec = Codec()
    dead = DeadLetter(value=codec.encode("sale", SALE), key=b"s-1",
                      reason=Reason.UNKNOWN_CUSTOMER, message="no customer 7",
                      source="ns.sales", partition=3, offset=10, sale_id="s-1")
    d = as_dict(Letter(dead, 0, 5), codec)
    assert d["records"][0]["customer_id"] == 7 and d["records"][0]["total_cost"] == "100.00"
    assert "value_hex" in d
    assert summary(dead, codec).startswith("customer 7, store 121, person 2, sugar x2")
    garbage = DeadLetter(value=b"\x00junk", key=None, reason=Reason.UNDECODABLE, message="",
                         source="ns.sales", partition=0, offset=1)
    assert as_dict(Letter(garbage, 0, 6), codec)["records"] is None


def test_tail_resolves_short_names_and_decodes() -> None:
    topics = Topics("ns")
    existing = {"ns.sales", "ns.sales.dlq", "ns-stream-counts-changelog", "ns.dim.customer"}
    assert resolve(topics, "sales", existing) == "ns.sales"
    assert resolve(topics, "counts", existing) == "ns-stream-counts-changelog"
    assert resolve(topics, "customer", existing) == "ns.dim.customer"
    with pytest.raises(ConfigError, match=r"no topic 'ns\.sales\.valid'"):
        resolve(topics, "valid", existing)
    codec = Codec()
    line = describe(topics, codec, "ns.sales", 0, 5, 1_700_000_000_000, b"s-1",
                    codec.encode("sale", SALE), None)
    assert line["record"] == "sale" and line["value"]["sale_id"] == "s-1"
    assert line["time"].startswith("2023-11-14T22:13:20")
    counted = describe(topics, codec, "ns-stream-counts-changelog", 0, 1, 0, b"totals",
                       counts(3, 2).encode(), None)
    assert counted["table"] == "counts" and counted["value"]["in"] == 3
    assert describe(topics, codec, "ns.sales", 0, 1, 0, None, b"junk", None)["undecodable"]


def test_kafka_tool_command_lines() -> None:
    argv = tool_command("java", Path("/libs"), "consumer-groups", ["--list"], "h:9092")
    assert argv[-4:] == ["--list", "--bootstrap-server", "h:9092"][-3:] or \
        argv[-3:] == ["--list", "--bootstrap-server", "h:9092"]
    assert "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand" in argv
    given = tool_command("java", Path("/libs"), "topics", ["--bootstrap-server", "x:1"], "h")
    assert given.count("--bootstrap-server") == 1
    with pytest.raises(StackError, match="unknown Kafka tool"):
        tool_command("java", Path("/libs"), "nope", [], "h")
