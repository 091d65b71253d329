"""Strict parsing (data-contract.md, "Parsing"): every lenient spelling Python accepts is
rejected, and the CSV record cuts agree with the csv module on hostile input."""

from __future__ import annotations

import csv
import io
import random
from datetime import date

import pytest

from salesflow.errors import InputError
from salesflow.parsing import (
    MAX_FIELD_CHARS,
    ParseError,
    allow_long_fields,
    check_utf8,
    header_end,
    line_ends,
    parse_cents,
    parse_date,
    parse_int,
    record_cuts,
)

# --- numbers and dates: (text, value) accepted, text rejected ---------------------------------

INTS = [("0", 0), ("7", 7), ("007", 7), ("-2", -2), ("2147483648", 2147483648)]
NOT_INTS = ["", " ", "1_2", "+5", "٥٠", "１２", "1e3", "1.0", "1.", " 12", "12 ", "\t12",
            "12\n", "1 2", "0x10", "--1", "-", "1,000", "12\u00a0", "²", "NaN", "½"]
MONEY = [("50", 5000), ("50.0", 5000), ("50.00", 5000), ("5.", 500), ("0.05", 5),
         ("-0.5", -50), ("-2", -200), ("99999999.99", 9_999_999_999),
         ("123456789012345", 12_345_678_901_234_500)]
NOT_MONEY = ["", "5_0", "5_0.00", "1e3", "1E3", "٥٠", "٥٠.٠٠", "+50", " 50", "50 ", "50.000",
             "1.005", ".5", "-.5", "NaN", "Infinity", "-Infinity", "50,00", "1,000.00",
             "$50", "50.0.0", "0x32", "50\u00a0", "５０"]
DATES = [("2026-01-19", date(2026, 1, 19)), ("2000-02-29", date(2000, 2, 29)),
         ("0001-01-01", date(1, 1, 1))]
NOT_DATES = ["20260119", "2026-W03-1", "2026-W03", "2026-019", "2026-01-19T00:00",
             "2026-01-19 ", " 2026-01-19", "2026-1-19", "2026-01-9", "26-01-19", "2025-13-45",
             "2025-02-29", "0000-01-01", "2026/01/19", "19-01-2026", "٢٠٢٦-٠١-١٩",
             "2026-01-19Z", "+2026-01-19", ""]


@pytest.mark.parametrize("text,value", INTS)
def test_integers(text, value):
    assert parse_int(text) == value


@pytest.mark.parametrize("text", NOT_INTS)
def test_not_integers(text):
    with pytest.raises(ParseError):
        parse_int(text)


@pytest.mark.parametrize("text,cents", MONEY)
def test_money(text, cents):
    assert parse_cents(text) == cents


@pytest.mark.parametrize("text", NOT_MONEY)
def test_not_money(text):
    with pytest.raises(ParseError):
        parse_cents(text)


@pytest.mark.parametrize("text,day", DATES)
def test_dates(text, day):
    assert parse_date(text) == day


@pytest.mark.parametrize("text", NOT_DATES)
def test_not_dates(text):
    with pytest.raises(ParseError):
        parse_date(text)


def test_python_itself_is_lenient_here():
    """Why this module exists: each of these is accepted by the standard library."""
    from decimal import Decimal

    assert int("1_2") == 12 and int("٥٠") == 50 and int(" 7 ") == 7
    assert Decimal("1e3") == 1000 and Decimal("5_0") == 50
    assert date.fromisoformat("20260119") == date(2026, 1, 19)
    assert date.fromisoformat("2026-W03-1") == date(2026, 1, 12)


# --- the CSV structure -------------------------------------------------------------------------

def csv_rows(text: str) -> list[list[str]]:
    allow_long_fields()
    return list(csv.reader(io.StringIO(text, newline="")))


def rows_by_chunks(data: bytes, target: int) -> list[list[str]]:
    """Parse `data` chunk by chunk, cut where `record_cuts` says."""
    out, start = [], 0
    for end in record_cuts(data, 0, target):
        assert end > start
        out.extend(csv_rows(data[start:end].decode("utf-8")))
        start = end
    assert start == len(data)
    return out


PIECES = ["a", "b", "12", '"', '""', ",", "\n", "\r", "\r\n", " ", "é", "日本", "😀", '"x,y"',
          '12" pizza', '"multi\nline"', "\x00"]


@pytest.mark.parametrize("seed", range(400))
def test_record_cuts_agree_with_the_csv_module(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 120)))
    data = text.encode("utf-8")
    expected = csv_rows(text)
    for target in (1, 2, 7, 50, 10_000):
        assert rows_by_chunks(data, target) == expected, (text, target)


def test_a_stray_quote_in_an_unquoted_field_does_not_open_a_quoted_field():
    text = ('a,12" pizza,b\n' + "x,y,z\n" * 50 + 'c,"two\nlines, with ""quotes""",d\n'
            + "x,y,z\n" * 50)
    rows = rows_by_chunks(text.encode(), 16)
    assert rows == csv_rows(text)
    assert rows[0] == ["a", '12" pizza', "b"]
    assert rows[51] == ["c", 'two\nlines, with "quotes"', "d"]


def test_cr_only_and_crlf_line_ends():
    for end in ("\r", "\r\n", "\n"):
        text = end.join(["h1,h2", "1,2", '"a' + end + 'b",3', "4,5"]) + end
        data = text.encode()
        assert rows_by_chunks(data, 3) == [["h1", "h2"], ["1", "2"], ["a" + end + "b", "3"],
                                           ["4", "5"]]
        assert line_ends(data) == 5
        assert data[:header_end(data)] == ("h1,h2" + end).encode()


def test_long_fields_are_read_up_to_the_documented_bound():
    big = "x" * (10 * 1024 * 1024)
    assert csv_rows(f"a,{big},b\n") == [["a", big, "b"]]
    assert MAX_FIELD_CHARS >= 10 * 1024 * 1024


def test_utf8_check_names_file_line_column_byte_and_the_fix():
    data = b"h\nok\nCaf" + b"\xe9 au lait\n"
    with pytest.raises(InputError) as err:
        check_utf8("sales.csv", data)
    message = str(err.value)
    assert "sales.csv: line 3, column 4: byte 0xe9 is not UTF-8" in message
    assert "iconv -f latin1 -t utf-8" in message and "\n" not in message
    check_utf8("fine.csv", "日本語 😀\n".encode() * 100_000)  # across the check's slices


def test_utf8_check_at_a_slice_boundary():
    step = 1 << 22
    data = b"a" * (step - 1) + "😀".encode() + b"b" * 10  # a character across the boundary
    check_utf8("x.csv", data)
    with pytest.raises(InputError, match="byte 0xf0"):
        check_utf8("x.csv", b"a" * (step - 1) + "😀".encode()[:2] + b"b")
