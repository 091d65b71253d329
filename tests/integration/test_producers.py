"""Producers against the real broker: round trips, producer-side dead letters, idempotent ids,
strict parsing, chunk cuts, broker outages and one-line errors (issue 12's findings)."""

import csv
import io
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from producers.dims import produce_dims
from producers.generate import GenerateSpec, sale_rows, write_dimensions
from producers.rows import parse_sale
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter
from salesflow.kafka import partition_for, read_all
from salesflow.stack import kafka as stack_kafka
from salesflow.topics import Topics
from tests.conftest import DATA
from tests.workers import StreamWorker, totals, wait_until_processed, worker_env

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
    summary = produce_dims(settings, DATA)
    assert summary.sent == {"customer": 12, "store": 5, "product": 8, "sales_team": 16}
    assert summary.dead_lettered == 0
    codec = Codec()
    stores = {int(m.key()): codec.decode(m.value()).record
              for m in read_all(settings, Topics(settings.namespace).dim("store"))}
    assert stores[122]["reviews"] == "Excellent selection, of products."
    assert stores[125]["reviews"] == 'Small kiosk "near" the metro.'


def test_broker_down_is_one_clear_line_and_nonzero_exit(tmp_path):
    # Producers ride out an outage for SALESFLOW_PRODUCER_OUTAGE_SECONDS, saying that they wait;
    # then the error is one line.
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "salesflow_cli", "produce", "sales", str(SALES_FILES[0])],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SALESFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1",
             "SALESFLOW_PRODUCER_OUTAGE_SECONDS": "3"})
    assert result.returncode == 1
    *waiting, error = result.stderr.strip().splitlines()
    assert all(line.startswith("waiting for Kafka at 127.0.0.1:1") for line in waiting)
    assert "no Kafka broker answered at 127.0.0.1:1" in error
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


# --- issue 12: nothing doubled, nothing stuck ----------------------------------------------

NO_ID_HEADER = ["customer_id", "store_id", "product_name", "sales_date", "sales_person_id",
                "price", "quantity", "total_cost"]


def no_id_rows(n: int, seed: int = 42, customers: int = 300) -> list[list[str]]:
    """Rows as the seed's own generator writes them: no sale_id column."""
    return [r[1:] for r in sale_rows(GenerateSpec(rows=n, customers=customers, seed=seed))]


def write_rows(path: Path, rows, header=NO_ID_HEADER, lineterminator="\n",
               encoding="utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.writer(f, lineterminator=lineterminator)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sale_ids(settings) -> list[str]:
    return [s["sale_id"] for s in sales_on_topic(settings)]


def cli(settings, *args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "salesflow_cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=worker_env(settings, **env))


# 1. ids of files without a sale_id column

def test_resending_a_file_with_an_inserted_line_or_crlf_adds_no_sale(settings, tmp_path):
    rows = no_id_rows(5000)
    produce_sales(settings, [write_rows(tmp_path / "sales.csv", rows)])
    first = set(sale_ids(settings))
    assert len(first) == 5000
    extra = no_id_rows(1, seed=7)
    produce_sales(settings, [write_rows(tmp_path / "inserted.csv", extra + rows)])
    after_insert = set(sale_ids(settings))
    assert len(after_insert) == 5001, "a line inserted at the top made every id new"
    produce_sales(settings, [write_rows(tmp_path / "crlf.csv", rows, lineterminator="\r\n")])
    assert set(sale_ids(settings)) == after_insert, "CRLF line endings made new ids"


def test_a_file_fixed_after_a_crash_part_way_adds_no_sale(settings, tmp_path):
    rows = no_id_rows(60_000)
    bad = 46_273  # the row (0-based) a Latin-1 byte broke: line bad + 2 of the file
    rows[bad][2] = "café crème"
    broken = write_rows(tmp_path / "broken.csv", rows, encoding="latin-1")
    with pytest.raises(Exception) as err:
        produce_sales(settings, [broken])
    message = str(err.value)
    assert f"line {bad + 2}" in message and "0xe9" in message and "iconv" in message, message
    # What a producer that crashed part-way had sent: the rows before the bad one.
    produce_sales(settings, [write_rows(tmp_path / "sent.csv", rows[:bad])])
    fixed = write_rows(tmp_path / "fixed.csv", rows)  # converted to UTF-8, sent again
    produce_sales(settings, [fixed])
    ids = sale_ids(settings)
    assert len(set(ids)) == 60_000, f"{len(set(ids)) - 60_000} sales counted twice"
    assert any(s["product_name"] == "café crème" for s in sales_on_topic(settings))


def test_resends_are_exact_replays_for_a_real_stream_worker(settings, tmp_path):
    s = settings.model_copy(update={"flush_interval_seconds": 3600.0})
    data = tmp_path / "data"
    write_dimensions(data, GenerateSpec(customers=300))
    produce_dims(s, data)
    rows = no_id_rows(2000)
    with StreamWorker(s, tmp_path):
        produce_sales(s, [write_rows(tmp_path / "a.csv", rows)])
        produce_sales(s, [write_rows(tmp_path / "b.csv", no_id_rows(1, seed=7) + rows)])
        produce_sales(s, [write_rows(tmp_path / "c.csv", rows, lineterminator="\r\n")])
        produce_sales(s, [write_rows(tmp_path / "d.csv", rows[:700])])
        wait_until_processed(s, timeout=120)
        counts = totals(s)
    assert counts.accepted == 2001, counts
    assert counts.replays == 2000 + 2000 + 700, counts  # b: 1 new + 2000 seen; c; d
    assert counts.reconciled and not counts.dead_lettered, counts


# 2. chunk cuts

def test_a_stray_quote_does_not_cut_a_quoted_field_in_two(settings, tmp_path):
    rows = [r for r in sale_rows(GenerateSpec(rows=16_000, customers=300))]
    rows[14_000][3] = 'family pack,\n"extra" large'  # quoted, over two lines, after 1 MB
    path = tmp_path / "quotes.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["sale_id", *NO_ID_HEADER])
        for i, row in enumerate(rows):
            if i == 10:  # a stray quote in an unquoted field: a plain character to csv
                f.write(",".join([*row[:3], '12" pizza', *row[4:]]) + "\n")
            else:
                writer.writerow(row)
    assert path.stat().st_size > 1 << 20
    summary = produce_sales(settings, [path])
    assert (summary.read, summary.sent, summary.dead_lettered) == (16_000, 16_000, 0)
    names = {s["sale_id"]: s["product_name"] for s in sales_on_topic(settings)}
    assert names[rows[10][0]] == '12" pizza'
    assert names[rows[14_000][0]] == 'family pack,\n"extra" large'
    assert not dead_letters(settings)


# 7. strict parsing: (field, text) the contract calls unparseable / out of bounds

LENIENT = [("price", "5_0"), ("customer_id", "1_2"), ("price", "٥٠"), ("quantity", "٣"),
           ("sales_date", "20260119"), ("sales_date", "2026-W03-1"), ("price", "1e3"),
           ("price", " 50.00"), ("customer_id", "4 "), ("sales_date", " 2026-01-19"),
           ("quantity", "+1"), ("total_cost", "50.000")]
OUT_OF_BOUNDS = [("customer_id", "3000000000"), ("product_name", "n" * 256),
                 ("quantity", "1000001"), ("price", "100000000.00")]


def test_lenient_spellings_are_unparseable_and_big_values_out_of_bounds(settings, tmp_path):
    good = {"sale_id": "ok", "customer_id": "4", "store_id": "121", "product_name": "sugar",
            "sales_date": "2026-01-19", "sales_person_id": "1", "price": "50.00",
            "quantity": "1", "total_cost": "50.00"}
    cases = [("unparseable", f, v) for f, v in LENIENT] + \
        [("out_of_bounds", f, v) for f, v in OUT_OF_BOUNDS]
    rows = [list(good.values())] + [
        list({**good, "sale_id": f"case-{i}", field: text}.values())
        for i, (_, field, text) in enumerate(cases)]
    summary = produce_sales(settings, [write_rows(tmp_path / "strict.csv", rows,
                                                  header=list(good))])
    assert [s["sale_id"] for s in sales_on_topic(settings)] == ["ok"]
    letters = {d.sale_id: d for d in dead_letters(settings)}
    for i, (reason, field, text) in enumerate(cases):
        letter = letters[f"case-{i}"]
        assert (letter.reason.value, letter.line) == (reason, i + 3), (field, text, letter)
        assert field in letter.message
    assert summary.by_reason == {"unparseable": len(LENIENT), "out_of_bounds": len(OUT_OF_BOUNDS)}


# 4. (producer side) dimension rows out of bounds

def test_dimension_rows_out_of_bounds_are_dead_lettered_and_the_rest_sent(settings, tmp_path):
    data = tmp_path / "dims"
    data.mkdir()
    for name in ("customer", "store", "product", "sales_team"):
        (data / f"{name}.csv").write_bytes((DATA / f"{name}.csv").read_bytes())
    with (data / "customer.csv").open("a", encoding="utf-8", newline="") as f:
        f.write(f"13,{'N' * 300},Long,Delhi,110011,9100000000,2025-01-01\n")
        f.write("3000000000,Big,Id,Delhi,110011,9100000000,2025-01-01\n")
        f.write("14,Fine,After,Delhi,110011,9100000000,2025-01-01\n")
    summary = produce_dims(settings, data)
    assert summary.sent["customer"] == 13 and summary.by_reason == {"out_of_bounds": 2}
    ids = {int(m.key()) for m in read_all(settings, Topics(settings.namespace).dim("customer"))}
    assert ids == set(range(1, 13)) | {14}
    letters = dead_letters(settings)
    assert sorted((d.reason.value, d.line) for d in letters) == [("out_of_bounds", 14),
                                                                 ("out_of_bounds", 15)]
    assert all(d.source.endswith("customer.csv") and d.side == "producer" for d in letters)


# 8. one-line messages, 9. dead letters by reason

def test_the_cli_reads_cr_only_files_long_fields_and_says_one_line(settings, tmp_path):
    lf = (DATA / "sales_part1.csv").read_bytes()
    cr = tmp_path / "cr_only.csv"
    cr.write_bytes(lf.replace(b"\n", b"\r"))
    result = cli(settings, "produce", "sales", str(cr), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "read 64 / sent 64 / dead-lettered 0"
    before = sorted(sale_ids(settings))
    produce_sales(settings, [DATA / "sales_part1.csv"])
    assert sorted(set(sale_ids(settings))) == sorted(set(before)) and len(set(before)) == 64

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(lf + "x1,1,121,café,2025-01-02,1,1.50,2,3.00\n".encode("latin-1"))
    result = cli(settings, "produce", "sales", str(latin1), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"{latin1}: line 66, column 13: byte 0xe9 is not UTF-8" in line
    assert "iconv -f latin1 -t utf-8" in line

    huge = tmp_path / "huge.csv"
    huge.write_bytes(lf.replace(b"sugar", b"s" * (10 * 1024 * 1024), 1))
    result = cli(settings, "produce", "sales", str(huge), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "read 64 / sent 63 / dead-lettered 1 (out_of_bounds 1)"

    result = cli(settings, "produce", "sales", *map(str, SALES_FILES), cwd=tmp_path)
    assert result.stdout.strip() == ("read 128 / sent 116 / dead-lettered 12 "
                                     "(missing_field 6, unparseable 6)"), result.stderr


def test_dead_letters_are_counted_by_side_and_reason_once_per_row(settings, tmp_path):
    from salesflow.dead_letters import read_counts

    assert read_counts(settings).letters == 0
    produce_sales(settings, SALES_FILES)
    produce_sales(settings, SALES_FILES)  # the same bad rows, dead-lettered again
    counts = read_counts(settings)
    assert counts.letters == 24
    assert counts.by_side() == {"producer": {"missing_field": 6, "unparseable": 6},
                                "stream": {}}


# 3. broker outages

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_producer_rides_out_an_outage_and_a_failure_part_way_says_how_far(settings,
                                                                              tmp_path):
    port = free_port()
    broker = settings.model_copy(update={"stack_dir": tmp_path / "stack",
                                         "kafka_bootstrap": f"127.0.0.1:{port}"})
    small = write_rows(tmp_path / "small.csv", no_id_rows(3000))
    err = (tmp_path / "outage.err").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "salesflow_cli", "produce", "sales", str(small)],
        stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path,
        env=worker_env(broker, SALESFLOW_PRODUCER_OUTAGE_SECONDS="240"),
        start_new_session=True)
    try:
        time.sleep(15)  # longer than the old producer's 10 s
        assert proc.poll() is None, (tmp_path / "outage.err").read_text()
        assert "waiting for Kafka at 127.0.0.1:" in (tmp_path / "outage.err").read_text()
        stack_kafka.up(broker)
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, (tmp_path / "outage.err").read_text()
        assert out.strip() == "read 3000 / sent 3000 / dead-lettered 0"
        assert len(set(sale_ids(broker))) == 3000

        # Now a broker that goes away part-way and stays away longer than the bound.
        big = write_rows(tmp_path / "big.csv", no_id_rows(600_000, seed=3))
        proc = subprocess.Popen(
            [sys.executable, "-m", "salesflow_cli", "produce", "sales", str(big)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env=worker_env(broker, SALESFLOW_PRODUCER_OUTAGE_SECONDS="6"),
            start_new_session=True)
        deadline = time.monotonic() + 120
        while len(sale_ids(broker)) <= 3000:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        stack_kafka.down(broker)
        assert proc.poll() is None, "the file was sent before the broker stopped: use a bigger one"
        out, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "Traceback" not in stderr, stderr
        error = stderr.strip().splitlines()[-1]
        assert " so far read " in error and "Sending the same files again never double " \
            "counts" in error, error
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stack_kafka.down(broker, wipe=True)
