"""The hand-written Avro of the hot path against fastavro: same records, same verdicts."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from salesflow.codec import Codec
from salesflow.errors import DecodeError
from salesflow.sale import Sale

CODEC = Codec()
TEXT = "aé€𝄞 ,\"\n‮x"


def random_sale(rng: random.Random) -> dict:
    def text() -> str:
        return "".join(rng.choice(TEXT) for _ in range(rng.choice((0, 1, 5, 63, 64, 200))))

    def long() -> int:
        return rng.choice((0, 1, -1, 63, 64, -65, 2**31, -(2**63), 2**63 - 1,
                           rng.randrange(-(2**40), 2**40)))

    def money() -> Decimal:
        return Decimal(rng.choice((0, 1, -1, 127, 128, -129, 10**12, rng.randrange(-10**9,
                                                                                   10**9))
                               )).scaleb(-2)

    return {"sale_id": text(), "customer_id": long(), "store_id": long(),
            "product_name": text(), "sales_date": date(1970, 1, 1) + timedelta(
                days=rng.randrange(-700_000, 2_000_000)),
            "sales_person_id": long(), "price": money(),
            "quantity": rng.choice((0, -1, 2**31 - 1, -(2**31), rng.randrange(-500, 500))),
            "total_cost": money()}


def fastavro_sales(data: bytes) -> list[Sale]:
    decoded = CODEC.decode(data)
    records = decoded.record["sales"] if decoded.name == "sale_batch" else [decoded.record]
    return [Sale.from_record(r) for r in records]


def test_hand_reading_gives_what_fastavro_reads():
    rng = random.Random(11)
    for _ in range(2000):
        records = [random_sale(rng) for _ in range(rng.choice((1, 2, 7)))]
        for data in (CODEC.encode("sale", records[0]),
                     CODEC.encode("sale_batch", {"sales": records})):
            assert CODEC.decode_sales(data).sales == fastavro_sales(data)


def test_corrupt_bytes_are_undecodable_as_with_fastavro():
    """A mangled message is refused, or read exactly as fastavro reads it."""
    rng = random.Random(12)
    refused = 0
    for _ in range(3000):
        records = [random_sale(rng) for _ in range(rng.choice((1, 3)))]
        data = bytearray(rng.choice((CODEC.encode("sale", records[0]),
                                     CODEC.encode("sale_batch", {"sales": records}))))
        kind = rng.randrange(3)
        if kind == 0:
            del data[rng.randrange(10, len(data)):]
        elif kind == 1:
            data[rng.randrange(10, len(data))] = rng.randrange(256)
        else:
            data += bytes(rng.randrange(1, 4))
        try:
            expected = fastavro_sales(bytes(data))
        except (DecodeError, ValueError, OverflowError):
            expected = None
        try:
            got = CODEC.decode_sales(bytes(data)).sales
        except DecodeError:
            got = None
        # Stricter than fastavro, never laxer: what the hand reader reads, fastavro reads the
        # same; it may refuse what fastavro reads (an `int` beyond 32 bits, a `long` beyond
        # 64, which fastavro wraps around).
        if got is not None:
            assert got == expected
        refused += got is None and expected is not None
    assert refused < 100


def test_valid_sales_written_by_hand_read_back_by_fastavro():
    rng = random.Random(13)
    for _ in range(300):
        entries = []
        for _ in range(rng.choice((0, 1, 3, 70))):
            accepted = sorted(rng.sample(range(600), rng.choice((0, 1, 64, 500))))
            entries.append((rng.randbytes(rng.choice((0, 10, 200))), accepted,
                            [rng.randrange(-10, 10**10) for _ in accepted]))
        data = CODEC.encode_valid_sales(entries)
        record = CODEC.decode(data).record
        assert record == {"messages": [{"message": m, "accepted": a, "list_price_cents": p}
                                       for m, a, p in entries]}
        assert data == CODEC.encode("valid_sales", record)
