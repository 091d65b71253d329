"""The Avro binary bodies of the hot path, read and written by hand.

fastavro costs about 10 µs a call before it reads a byte, which is most of the work for a
message that holds one sale. For the exact current `Sale` and `SaleBatch` schemas (and the
stream app's own `ValidSales`) this module reads and writes the Avro binary encoding directly
(zigzag varints, length-prefixed bytes and strings, blocked arrays): 3-5× faster on single
sales. `salesflow.codec` is its only user and falls back to fastavro for every other writer
schema (resolution); `tests/unit/salesflow/test_sale_wire.py` holds both to the same bytes
and the same verdicts on corrupt input.
"""

from __future__ import annotations

from salesflow.sale import Sale, day

_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_new_tuple = tuple.__new__
_from_bytes = int.from_bytes


class Corrupt(ValueError):
    """The bytes are not an encoding of the record."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint (Avro int or long) at `pos`, and the position after it."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    result, shift = b & 0x7F, 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise Corrupt("varint longer than 10 bytes")


def _long(buf: bytes, pos: int, bounds: tuple[int, int] = _INT64) -> tuple[int, int]:
    value, pos = _varint(buf, pos)
    if not bounds[0] <= value <= bounds[1]:
        raise Corrupt("number out of range")
    return value, pos


def _bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _varint(buf, pos)
    end = pos + n
    if n < 0 or end > len(buf):
        raise Corrupt("length past the end")
    return buf[pos:end], end


def _sale(buf: bytes, pos: int) -> tuple[Sale, int]:
    raw, pos = _bytes(buf, pos)
    sale_id = raw.decode()
    customer, pos = _long(buf, pos)
    store, pos = _long(buf, pos)
    raw, pos = _bytes(buf, pos)
    name = raw.decode()
    days, pos = _long(buf, pos, _INT32)
    person, pos = _long(buf, pos)
    raw, pos = _bytes(buf, pos)
    price = _from_bytes(raw, "big", signed=True)
    quantity, pos = _long(buf, pos, _INT32)
    raw, pos = _bytes(buf, pos)
    total = _from_bytes(raw, "big", signed=True)
    try:
        when = day(days)
    except (OverflowError, ValueError) as exc:
        raise Corrupt("date out of range") from exc
    return _new_tuple(Sale, (sale_id, customer, store, name, when, person,  # type: ignore[call-overload]
                             price, quantity, total)), pos


def read_sales(buf: bytes, pos: int, batch: bool) -> list[Sale]:
    """The sales of a `Sale` (batch=False) or `SaleBatch` body starting at `pos`."""
    try:
        if not batch:
            sale, pos = _sale(buf, pos)
            out = [sale]
        else:
            out = []
            while True:
                count, pos = _long(buf, pos)
                if count == 0:
                    break
                if count < 0:  # a block with its size in bytes
                    count = -count
                    _, pos = _long(buf, pos)
                for _ in range(count):
                    sale, pos = _sale(buf, pos)
                    out.append(sale)
    except (IndexError, UnicodeDecodeError) as exc:
        raise Corrupt(type(exc).__name__) from exc
    if pos != len(buf):
        raise Corrupt(f"{len(buf) - pos} trailing bytes")
    return out


# --- writing -------------------------------------------------------------------------------


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _array(items: list[int]) -> bytes:
    if not items:
        return b"\x00"
    return b"".join((_zigzag(len(items)), *map(_zigzag, items), b"\x00"))


AcceptedFrom = tuple[bytes, list[int], list[int]]  # (message, accepted indices, list prices)


def write_valid_sales(entries: list[AcceptedFrom]) -> bytes:
    """The body of a `ValidSales` record (schemas/valid_sales.avsc)."""
    if not entries:
        return b"\x00"
    parts = [_zigzag(len(entries))]
    for message, accepted, list_prices in entries:
        parts += (_zigzag(len(message)), message, _array(accepted), _array(list_prices))
    parts.append(b"\x00")
    return b"".join(parts)
