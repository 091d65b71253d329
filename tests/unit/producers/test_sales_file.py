"""A sales file read, cut and encoded as `produce sales` does it, without Kafka: ids of files
without a sale_id column, chunk cuts, producer-side dead letters, file errors."""

from __future__ import annotations

import csv
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from producers.generate import GenerateSpec, sale_rows
from producers.sales import MAX_DEAD_LETTER_ROW, encode_file, open_sales_file
from salesflow.codec import Codec
from salesflow.errors import InputError

HEADER = ["customer_id", "store_id", "product_name", "sales_date", "sales_person_id", "price",
          "quantity", "total_cost"]
CODEC = Codec()


def rows(n: int, seed: int = 1) -> list[list[str]]:
    return [r[1:] for r in sale_rows(GenerateSpec(rows=n, customers=50, seed=seed))]


def write(path: Path, body: list[list[str]], header=HEADER, **fmt) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, **({"lineterminator": "\n"} | fmt))
        writer.writerow(header)
        writer.writerows(body)
    return path


def encoded(path: Path, chunk_bytes: int = 1 << 20):
    with ThreadPoolExecutor(2) as pool:
        return list(encode_file(pool, open_sales_file(path), 6, 50, 4, chunk_bytes))


def sales(path: Path, chunk_bytes: int = 1 << 20) -> list[dict]:
    return [s for e in encoded(path, chunk_bytes) for _, payload, _ in e.batches
            for s in CODEC.decode(payload).record["sales"]]


def ids(path: Path, chunk_bytes: int = 1 << 20) -> list[str]:
    return [s["sale_id"] for s in sales(path, chunk_bytes)]


def test_derived_ids_survive_every_re_export(tmp_path):
    body = rows(400)
    base = ids(write(tmp_path / "a.csv", body))
    assert len(base) == len(set(base)) == 400
    variants = {
        "crlf": write(tmp_path / "crlf.csv", body, lineterminator="\r\n"),
        "cr": write(tmp_path / "cr.csv", body, lineterminator="\r"),
        "quoted": write(tmp_path / "q.csv", body, quoting=csv.QUOTE_ALL),
        "reordered": write(tmp_path / "r.csv", random.Random(3).sample(body, len(body))),
        "respelt": write(tmp_path / "s.csv", [[*r[:5], r[5].rstrip("0"), *r[6:]]
                                              for r in body]),
        "columns": write(tmp_path / "c.csv", [r[::-1] for r in body], header=HEADER[::-1]),
    }
    for name, path in variants.items():
        assert sorted(ids(path, chunk_bytes=997)) == sorted(base), name
    inserted = ids(write(tmp_path / "i.csv", [rows(1, seed=9)[0], *body]))
    assert set(base) < set(inserted) and len(set(inserted) - set(base)) == 1
    prefix = ids(write(tmp_path / "p.csv", body[:150]))
    assert set(prefix) < set(base)


def test_identical_rows_are_distinct_sales_wherever_the_chunks_cut(tmp_path):
    body = rows(60)
    doubled = [r for r in body for _ in range(3)]  # each row three times, side by side
    spread = body * 3  # and each row three times, far apart
    whole = ids(write(tmp_path / "d.csv", doubled))
    assert len(set(whole)) == 180
    for path in (tmp_path / "d.csv", write(tmp_path / "s.csv", spread)):
        for chunk_bytes in (64, 500, 1 << 20):
            assert sorted(ids(path, chunk_bytes)) == sorted(whole), (path, chunk_bytes)
    # the first copy of a row keeps its id when the later copies go
    assert set(ids(write(tmp_path / "once.csv", body))) < set(whole)


def test_rejected_rows_have_stable_row_ids_and_lines(tmp_path):
    bad = ["1", "121", "sugar", "2026-01-19", "1", "5_0", "1", "50.00"]
    body = [*rows(30), bad, *rows(30, seed=2), bad]
    letters = [d for e in encoded(write(tmp_path / "b.csv", body), 300) for d, _ in e.rejected]
    assert [(d.line, d.reason.value) for d in letters] == [(32, "unparseable"),
                                                           (63, "unparseable")]
    assert letters[0].row_id != letters[1].row_id and letters[0].source.endswith("b.csv")
    again = [d for e in encoded(write(tmp_path / "b2.csv", [rows(1, 5)[0], *body],
                                      lineterminator="\r\n")) for d, _ in e.rejected]
    assert [d.row_id for d in again] == [d.row_id for d in letters]
    assert [d.line for d in again] == [33, 64]


def test_a_huge_field_is_read_and_its_dead_letter_is_cut(tmp_path):
    huge = "p" * (10 * 1024 * 1024)
    body = [*rows(5), ["1", "121", huge, "2026-01-19", "1", "50.00", "1", "50.00"], *rows(5, 2)]
    result = encoded(write(tmp_path / "h.csv", body))
    [(dead, _)] = [d for e in result for d in e.rejected]
    assert dead.reason.value == "out_of_bounds" and dead.line == 7
    assert len(dead.value) == MAX_DEAD_LETTER_ROW and "line 7 of" in dead.message
    assert sum(e.rows for e in result) == 11


@pytest.mark.parametrize("content,message", [
    (b"customer_id,store_id\n1,2\n", "not a sales file, missing columns product_name"),
    (",".join(HEADER).encode() + b"\n1,121,caf\xe9,2026-01-19,1,1.00,1,1.00\n",
     "line 2, column 10: byte 0xe9 is not UTF-8"),
])
def test_file_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        open_sales_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_stray_quote_does_not_split_a_quoted_multi_line_field(tmp_path):
    body = rows(2000)
    body[10][2] = '12" pizza'
    body[1500][2] = 'family pack,\n"extra" large'
    path = write(tmp_path / "q.csv", body)
    got = sales(path, chunk_bytes=4096)
    assert len(got) == 2000
    names = {s["product_name"] for s in got}
    assert '12" pizza' in names and 'family pack,\n"extra" large' in names
