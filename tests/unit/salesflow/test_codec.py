import json
import random
from datetime import date
from decimal import Decimal

import fastavro
import pytest

from salesflow.codec import SCHEMAS_DIR, Codec, fingerprint
from salesflow.errors import DecodeError

SALE = {
    "sale_id": "a1", "customer_id": 1, "store_id": 121, "product_name": "sugar ‮ \"x, y\"",
    "sales_date": date(2025, 1, 31), "sales_person_id": 3, "price": Decimal("50.00"),
    "quantity": 2, "total_cost": Decimal("100.00"),
}


def sale_schema(extra_field: bool) -> dict:
    raw = json.loads((SCHEMAS_DIR / "sale.avsc").read_text())
    if extra_field:
        raw["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return raw


def test_round_trip_single_and_batch():
    codec = Codec()
    assert codec.decode(codec.encode("sale", SALE)).record == SALE
    batch = codec.decode(codec.encode("sale_batch", {"sales": [SALE, SALE]}))
    assert batch.name == "sale_batch"
    assert batch.record["sales"] == [SALE, SALE]


def test_single_object_header_carries_the_fingerprint():
    codec = Codec()
    data = codec.encode("sale", SALE)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint(codec.schemas["sale"])
    # Known vector: CRC-64-AVRO of the schema "int" (from the Avro specification's test suite)
    assert fingerprint(fastavro.parse_schema("int")) == (0x7275D51A3F395C8F).to_bytes(8, "little")


def _v2_codec() -> Codec:
    schemas = Codec().schemas
    v2 = fastavro.parse_schema(sale_schema(extra_field=True))
    return Codec({**schemas, "sale": v2})


def test_v1_reader_reads_v2_writer():
    v2 = _v2_codec()
    data = v2.encode("sale", {**SALE, "channel": "web"})
    v1 = Codec()
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        v1.decode(data)
    v1.register_writer(sale_schema(extra_field=True))
    assert v1.decode(data).record == SALE  # the new field is dropped by resolution


def test_v2_reader_reads_v1_writer():
    v2 = _v2_codec()
    v2.register_writer(sale_schema(extra_field=False))
    record = v2.decode(Codec().encode("sale", SALE)).record
    assert record == {**SALE, "channel": None}  # the default fills the new field


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xc3\x01" + b"\0" * 8 + b"x", None])
def test_undecodable_inputs(data):
    with pytest.raises(DecodeError):
        Codec().decode(data)


def test_every_truncation_and_random_bytes_are_undecodable_not_crashes():
    codec = Codec()
    data = codec.encode("sale", SALE)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:cut])
    rng = random.Random(7)
    header = codec.header("sale")
    for _ in range(500):
        blob = header + rng.randbytes(rng.randrange(0, 80))
        try:
            decoded = codec.decode(blob)
        except DecodeError:
            continue
        assert decoded.name == "sale"  # random bytes that happen to decode are still a record
