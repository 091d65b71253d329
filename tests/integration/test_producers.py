"""Producers against the real broker: round trips, producer-side dead letters, idempotent ids."""

import csv
import io
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from producers.dims import produce_dims
from producers.rows import parse_sale
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter
from salesflow.kafka import partition_for, read_all
from salesflow.topics import Topics
from tests.conftest import DATA

pytestmark = pytest.mark.integration
SALES_FILES = [DATA / "sales_part1.csv", DATA / "sales_part2.csv"]


def sales_on_topic(settings):
    codec, out = Codec(), []
    for msg in read_all(settings, Topics(settings.namespace).sales):
        decoded = codec.decode(msg.value())
        sales = decoded.record["sales"] if decoded.name == "sale_batch" else [decoded.record]
        for sale in sales:
            assert msg.partition() == partition_for(sale["sale_id"], 6)
        out.extend(sales)
    return out


def dead_letters(settings):
    return [DeadLetter.from_message(m.value(), m.key(), m.headers())
            for m in read_all(settings, Topics(settings.namespace).dlq)]


def csv_rows(path):
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_examples_round_trip_and_producer_side_rejections(settings):
    summary = produce_sales(settings, SALES_FILES, batch_size=7)
    rows = [r for p in SALES_FILES for r in csv_rows(p)]
    good = [parse_sale(r) for r in rows]
    good = [g for g in good if isinstance(g, dict)]
    on_topic = sales_on_topic(settings)
    key = lambda s: (s["sale_id"], s["quantity"], s["total_cost"])  # noqa: E731
    assert sorted(on_topic, key=key) == sorted(good, key=key)

    expected = {(r["sale_id"], r["reason"]) for r in csv_rows(DATA / "expected_rejections.csv")
                if r["reason"] in ("missing_field", "unparseable")}
    letters = dead_letters(settings)
    assert {(d.sale_id, d.reason.value) for d in letters} == expected
    assert len(letters) == len(expected)
    for d in letters:
        assert d.source.endswith("sales_part2.csv") and d.line and d.line > 1
        assert d.value.decode().startswith(d.sale_id + ",")
    assert (summary.read, summary.sent, summary.dead_lettered) == (128, 116, 12)


def test_file_sent_twice_adds_no_new_sale_ids(settings, tmp_path):
    # A file without a sale_id column: ids come from its content and row numbers.
    src = tmp_path / "no_ids.csv"
    with (DATA / "sales_part1.csv").open() as f, src.open("w") as out:
        for line in f:
            out.write(line.split(",", 1)[1])
    produce_sales(settings, [src])
    first = [s["sale_id"] for s in sales_on_topic(settings)]
    produce_sales(settings, [src])
    second = [s["sale_id"] for s in sales_on_topic(settings)]
    assert len(first) == 64 and len(set(first)) == 64
    assert set(second) == set(first) and len(second) == 128


def test_quoted_fields_survive(settings, tmp_path):
    name = 'odd, "quoted"\nname ‮ 日本語 😀'
    src = tmp_path / "odd.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sale_id", "customer_id", "store_id", "product_name", "sales_date",
                    "sales_person_id", "price", "quantity", "total_cost"])
        w.writerow(["q1", 1, 121, name, "2025-01-02", 1, "1.50", 2, "3.00"])
        w.writerow(["q2", "", 121, name, "2025-01-02", 1, "1.50", 2, "3.00"])
        w.writerow(["q3", 1, 121, "sugar", "2025-01-02", 1, "1.50", 2, "3.00"])
    produce_sales(settings, [src])
    sales = {s["sale_id"]: s for s in sales_on_topic(settings)}
    assert sales["q1"]["product_name"] == name and sales["q1"]["price"] == Decimal("1.50")
    [letter] = dead_letters(settings)
    assert letter.sale_id == "q2" and letter.line == 4  # the row after a two-line row
    assert next(csv.reader(io.StringIO(letter.value.decode("utf-8"))))[3] == name


def test_dims_round_trip(settings):
    counts = produce_dims(settings, DATA)
    assert counts == {"customer": 12, "store": 5, "product": 8, "sales_team": 16}
    codec = Codec()
    stores = {int(m.key()): codec.decode(m.value()).record
              for m in read_all(settings, Topics(settings.namespace).dim("store"))}
    assert stores[122]["reviews"] == "Excellent selection, of products."
    assert stores[125]["reviews"] == 'Small kiosk "near" the metro.'


def test_broker_down_is_one_clear_line_and_nonzero_exit(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "salesflow_cli", "produce", "sales", str(SALES_FILES[0])],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SALESFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no Kafka broker answered at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
