"""Bad records on the dimension topics (issue 12, finding 4): a record of another dimension's
schema, garbage bytes, a field too long and an id too large for the marts.

On the old code one such record froze both marts (a KeyError in every flush, forever). Now
each is dead-lettered exactly once by the stream (reason `undecodable` or `out_of_bounds`,
source = the dimension topic), is never a known id, and the marts keep flushing and rebuild.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Producer

from mart_builder.commands import open_writer
from producers.dims import produce_dims
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter, read_counts
from salesflow.kafka import client_config, partition_for, read_all
from salesflow.settings import Settings
from salesflow.topics import Topics
from tests.conftest import DATA
from tests.workers import StreamWorker, accepted_sales, totals, wait_until_processed, worker_env

pytestmark = pytest.mark.integration
CODEC = Codec()


def customer(customer_id: int, first_name: str = "Ira") -> dict:
    return {"customer_id": customer_id, "first_name": first_name, "last_name": "Bose",
            "address": "Delhi", "pincode": "110011", "phone_number": "9100000000",
            "customer_joining_date": date(2025, 1, 1)}


PRODUCT_900 = {"id": 900, "name": "caviar", "current_price": Decimal("9.00"),
               "old_price": None, "created_date": None, "updated_date": None,
               "expiry_date": None}
TEAM_903 = {"id": 903, "first_name": "A", "last_name": "B", "manager_id": None,
            "is_manager": "N", "address": "Delhi", "pincode": "1", "joining_date": None}


def send(settings: Settings, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    producer, errors = Producer(client_config(settings, **{"acks": "all"})), []
    for topic, key, value in messages:
        producer.produce(topic, value, key,
                         on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(60) == 0 and not errors, errors


def sale(sale_id: str, customer_id: int) -> tuple[str, bytes, bytes]:
    record = {"sale_id": sale_id, "customer_id": customer_id, "store_id": 121,
              "product_name": "sugar", "sales_date": date(2025, 6, 1), "sales_person_id": 1,
              "price": Decimal("50.00"), "quantity": 2, "total_cost": Decimal("100.00")}
    return "", sale_id.encode(), CODEC.encode("sale", record)


def send_sales(settings: Settings, sales: list[tuple[str, bytes, bytes]]) -> None:
    producer, errors = Producer(client_config(settings, **{"acks": "all"})), []
    for _, key, value in sales:
        producer.produce(Topics(settings.namespace).sales, value, key,
                         partition=partition_for(key.decode(), settings.partitions),
                         on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(60) == 0 and not errors, errors


def dead_letters(settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.from_message(m.value(), m.key(), m.headers())
            for m in read_all(settings, Topics(settings.namespace).dlq)]


def from_dimensions(settings: Settings) -> list[DeadLetter]:
    dims = set(Topics(settings.namespace).dims.values())
    return [d for d in dead_letters(settings) if d.source in dims]


def salesflow(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "salesflow_cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd, env=worker_env(settings))


def bad_records(topics: Topics) -> list[tuple[str, bytes, bytes]]:
    truncated = CODEC.encode("sales_team", TEAM_903)
    return [
        (topics.dim("customer"), b"900", CODEC.encode("product", PRODUCT_900)),  # wrong schema
        (topics.dim("store"), b"901", b"not avro at all"),  # garbage
        (topics.dim("sales_team"), b"903", truncated[:len(truncated) - 3]),  # truncated
        (topics.dim("customer"), b"902", CODEC.encode("customer", customer(902, "N" * 300))),
        (topics.dim("customer"), b"3000000000", CODEC.encode("customer",
                                                             customer(3_000_000_000))),
    ]


def wait_for_dimension_letters(settings: Settings, more_than: int) -> list[DeadLetter]:
    deadline = time.monotonic() + 60
    while len(from_dimensions(settings)) <= more_than and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # a second copy would come with the worker's next timer ticks
    return from_dimensions(settings)


def test_bad_dimension_records_are_dead_lettered_once_and_never_known(settings, tmp_path):
    s = settings.model_copy(update={"flush_interval_seconds": 3600.0})
    topics = Topics(s.namespace)
    produce_dims(s, DATA)
    bad = bad_records(topics)
    send(s, bad)
    expected = sorted([(topics.dim("customer"), "undecodable"),
                       (topics.dim("store"), "undecodable"),
                       (topics.dim("sales_team"), "undecodable"),
                       (topics.dim("customer"), "out_of_bounds"),
                       (topics.dim("customer"), "out_of_bounds")])
    worker = StreamWorker(s, tmp_path)
    with worker:
        send_sales(s, [sale("known", 1), sale("wrong-schema", 900), sale("too-long", 902)])
        wait_until_processed(s, timeout=90)
        letters = wait_for_dimension_letters(s, len(bad) - 1)
        assert sorted((d.source, d.reason.value) for d in letters) == expected
        assert sorted(d.value for d in letters) == sorted(v for _, _, v in bad)  # byte for byte
        assert all(d.offset is not None and d.side == "stream" for d in letters)
        # the ids of the bad records are not known customers
        rejected = {d.sale_id: d.reason.value for d in dead_letters(s) if d.sale_id}
        assert rejected == {"wrong-schema": "unknown_customer", "too-long": "unknown_customer"}
        assert [sale.sale_id for _, sale in accepted_sales(s)] == ["known"]

    # once: a restarted worker (and one more bad record) adds only the new one
    send(s, [(topics.dim("product"), b"904", b"\xc3\x01" + b"\x00" * 8)])
    with worker.start():
        send_sales(s, [sale("after-restart", 2)])
        wait_until_processed(s, timeout=90)
        letters = wait_for_dimension_letters(s, len(bad))
    assert sorted((d.source, d.reason.value) for d in letters) == sorted(
        [*expected, (topics.dim("product"), "undecodable")])
    counts = read_counts(s)
    assert counts.stream == {"undecodable": 4, "out_of_bounds": 2, "unknown_customer": 2}
    stream = totals(s)
    assert stream.accepted == 2 and stream.reconciled, stream


def test_the_marts_flush_and_rebuild_past_bad_dimension_records(settings, tmp_path):
    s = settings.model_copy(update={"flush_interval_seconds": 3600.0})
    produce_dims(s, DATA)
    send(s, bad_records(Topics(s.namespace)))
    with StreamWorker(s, tmp_path):
        send_sales(s, [sale("known", 1), sale("wrong-schema", 900)])
        wait_until_processed(s, timeout=90)
        for verb in ("flush", "rebuild", "flush"):
            result = salesflow(s, "marts", verb, cwd=tmp_path)
            assert result.returncode == 0, (verb, result.stderr[-2000:])
    writer = open_writer(s)
    assert [r["customer_id"] for r in writer.read_customers()] == [1]
    assert writer.row_counts()["customer"] == 12  # the seed's customers, none of the bad


def test_out_of_bounds_dimension_rows_from_csv(settings, tmp_path):
    """The dimension producer dead-letters them itself (file and line) and sends the rest;
    the same values sent raw to the topic are dead-lettered by the stream (above)."""
    data = tmp_path / "dims"
    data.mkdir()
    for name in ("customer", "store", "product", "sales_team"):
        (data / f"{name}.csv").write_bytes((DATA / f"{name}.csv").read_bytes())
    with (data / "store.csv").open("a", encoding="utf-8") as f:
        f.write(f"126,{'A' * 256},201301,Ishaan,2024-12-01,fine\n")
    with (data / "sales_team.csv").open("a", encoding="utf-8") as f:
        f.write("17,Big,Boss,3000000000,N,Delhi,122007,2020-05-01\n")
        f.write("18,Ok,Fine,10,N,Delhi,122007,2020-05-01\n")
    result = salesflow(settings, "produce", "dims", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("customer 12 / store 5 / product 8 / sales_team 17 / "
                                     "dead-lettered 2 (out_of_bounds 2)")
    letters = sorted(dead_letters(settings), key=lambda d: d.source)
    assert [(Path(d.source).name, d.line, d.reason.value) for d in letters] == [
        ("sales_team.csv", 18, "out_of_bounds"), ("store.csv", 7, "out_of_bounds")]
    assert read_counts(settings).producer == {"out_of_bounds": 2}
