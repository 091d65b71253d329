"""Strict text parsing of CSV input, the same in every producer (data-contract.md, "Parsing").

Python's own readers are too lenient for a data contract: `int("1_2")` is 12, `int("٥٠")` is
50, `Decimal("1e3")` is 1000, `date.fromisoformat("20260119")` is a date, and all of them
forgive surrounding spaces. Here an integer is an optional `-` and ASCII digits; money is an
optional `-`, ASCII digits and at most one `.` followed by at most two digits; a date is
`YYYY-MM-DD`. Anything else raises `ParseError` (the reason `unparseable`).

The CSV structure is read by the `csv` module (default dialect, universal newlines). Because
producers cut files into chunks parsed in parallel, this module also says where a record ends
exactly as that reader does (`record_cuts`), and checks that a file is UTF-8 before anything
of it is sent (`check_utf8`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date
from functools import lru_cache
from pathlib import Path

from salesflow.errors import InputError

_INT = re.compile(r"-?[0-9]+")
_MONEY = re.compile(r"(-?)([0-9]+)(?:\.([0-9]{0,2}))?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")

# The longest CSV field a producer reads (characters). Python's csv module stops at 131,072
# by default and raises; no valid field comes near either bound (text fields hold at most 255
# characters), so a longer field is a broken file, reported with its file and line.
MAX_FIELD_CHARS = 64 * 1024 * 1024


class ParseError(ValueError):
    """A field that is not text of its type."""


def parse_int(text: str) -> int:
    """An optional `-` and ASCII digits, nothing else (no `_`, `+`, spaces, other digits)."""
    if text.isascii() and text.isdigit():  # the usual case, fast (isdigit alone is Unicode's)
        return int(text)
    if _INT.fullmatch(text) is None:
        raise ParseError(f"{_show(text)} is not an integer")
    return int(text)


def parse_cents(text: str) -> int:
    """Money as integer cents: `-`? digits, then at most one `.` and at most two digits."""
    if text.isascii():  # the usual `123.45`, fast
        whole, _, fraction = text.partition(".")
        if whole.isdigit() and len(fraction) == 2 and fraction.isdigit():
            return int(whole) * 100 + int(fraction)
    match = _MONEY.fullmatch(text)
    if match is None:
        raise ParseError(f"{_show(text)} is not an amount of money")
    sign, whole, fraction = match.groups()
    cents = int(whole) * 100 + int((fraction or "").ljust(2, "0"))
    return -cents if sign else cents


@lru_cache(maxsize=8192)
def parse_date(text: str) -> date:
    """`YYYY-MM-DD` and a real day of the calendar, nothing else (cached: sales share few
    dates)."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise ParseError(f"{_show(text)} is not a date (YYYY-MM-DD)")
    try:
        return date(*map(int, match.groups()))
    except ValueError:
        raise ParseError(f"{_show(text)} is not a day of the calendar") from None


def _show(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "…")


# --- the CSV structure -----------------------------------------------------------------------

def allow_long_fields() -> None:
    """Let the csv module read fields up to `MAX_FIELD_CHARS` (process-wide; idempotent)."""
    if csv.field_size_limit() != MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)


# One record as the csv module's reader sees it (default dialect, strict=False, lines split on
# \r\n, \r or \n): a field is quoted only when its first character is `"`; inside, `""` is a
# quote; after the closing quote, characters up to the next comma or line end are appended
# (a quote there is literal, as it is anywhere in an unquoted field: `12" pizza`). An
# unterminated quoted field runs to the end of the file. Possessive and atomic, so the scan
# is linear and never backtracks.
_FIELD = rb'(?>"(?:[^"]|"")*+(?:"[^,\r\n]*+|\Z)|[^,\r\n]*+)'
_RECORD = rb"(?>[^\"\r\n]*+(?:\r\n|\r|\n|\Z)|" + _FIELD + rb"(?:," + _FIELD + \
    rb")*+(?:\r\n|\r|\n|\Z))"
_RECORDS: dict[int, re.Pattern[bytes]] = {}


def record_cuts(content: bytes, start: int, target_bytes: int) -> Iterator[int]:
    """Offsets in `content` (UTF-8 CSV) where the csv module's reader ends a record, about
    `target_bytes` apart, from `start` (itself a record start) to the end.

    UTF-8 never puts the ASCII bytes `"`, `,`, CR or LF inside a multi-byte character, so the
    structure can be read from the bytes without decoding them.
    """
    size = len(content)
    lines = max(content.count(b"\n", start), content.count(b"\r", start), 1)
    estimate = max(1, min(1 << 20, target_bytes * lines // max(1, size - start)))
    per_chunk = 1 << (estimate.bit_length() - 1)  # a power of two: few patterns compiled
    pattern = _RECORDS.get(per_chunk)
    if pattern is None:
        pattern = _RECORDS[per_chunk] = re.compile(b"(?:%s){1,%d}+" % (_RECORD, per_chunk))
    pos = start
    while pos < size:
        match = pattern.match(content, pos)
        assert match is not None and match.end() > pos  # every non-empty input starts one
        pos = match.end()
        yield pos


def header_end(content: bytes) -> int:
    """The offset just after the first record (the header row)."""
    return next(record_cuts(content, 0, 1), 0)


def line_ends(content: bytes, start: int = 0, end: int | None = None) -> int:
    """How many lines end in `content[start:end]` as the csv module counts them (a CR LF
    pair, a lone CR or a lone LF each end one)."""
    end = len(content) if end is None else end
    return (content.count(b"\n", start, end) + content.count(b"\r", start, end)
            - content.count(b"\r\n", start, end))


BOM = b"\xef\xbb\xbf"


def read_csv_bytes(path: Path) -> bytes:
    """A CSV file's bytes without a UTF-8 BOM, checked to be UTF-8; `InputError` (naming the
    file, and the line of a bad byte) when it cannot be read."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    if content.startswith(BOM):
        content = content[len(BOM):]
    check_utf8(str(path), content)
    return content


def check_utf8(source: str, content: bytes) -> None:
    """Raise `InputError` naming the file, line, column and byte of the first invalid byte."""
    step, size, pos = 1 << 22, len(content), 0
    while pos < size:  # in slices, so a wide character does not make a 4-byte-per-char copy
        end = min(size, pos + step)
        while end < size and end < pos + step + 3 and 0x80 <= content[end] < 0xC0:
            end += 1  # end the slice after a whole character
        try:
            content[pos:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(source, content, pos + exc.start) from None
        pos = end


def _not_utf8(source: str, content: bytes, position: int) -> InputError:
    line = 1 + line_ends(content, 0, position)
    line_start = max(content.rfind(b"\n", 0, position), content.rfind(b"\r", 0, position))
    return InputError(
        f"{source}: line {line}, column {position - line_start}: byte "
        f"0x{content[position]:02x} is not UTF-8; input files must be UTF-8 (from Latin-1: "
        f"`iconv -f latin1 -t utf-8 {source} > utf8.csv`), nothing of this file was sent")
