"""The Confluent wire format, through confluent-kafka's real `SchemaRegistryClient`.

No schema registry can be installed here (Karapace is not on PyPI, Confluent's is not on
Maven Central), so the client talks to `FakeRegistry`: a small HTTP server on 127.0.0.1 that
implements the REST endpoints the client calls (found by logging its requests), keeping
schemas in memory. Any other request is recorded and fails the test.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fastavro
import pytest

from salesflow.codec import (
    SCHEMA_FILES,
    SCHEMAS_DIR,
    Codec,
    codec_for,
    load_schemas,
    schema_json,
)
from salesflow.errors import ConfigError, DecodeError
from salesflow.registry import ConfluentRegistry
from salesflow.settings import Settings

SALE = {
    "sale_id": "a1", "customer_id": 1, "store_id": 121, "product_name": "sugar \"x, y\" é",
    "sales_date": date(2025, 1, 31), "sales_person_id": 3, "price": Decimal("50.00"),
    "quantity": 2, "total_cost": Decimal("100.00"),
}
CHANNEL = {"name": "channel", "type": ["null", "string"], "default": None}


class FakeRegistry(ThreadingHTTPServer):
    """The Confluent Schema Registry REST API, as far as `SchemaRegistryClient` uses it.

    Ids are global (one id per distinct schema text, whatever the subject), like the real one.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}  # subject -> ids of its versions
        self.refuse: set[str] = set()  # subjects whose registrations answer 409
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def add(self, subject: str, schema: str) -> int:
        with self.lock:
            schema_id = next((i for i, s in self.schemas.items() if s == schema), None)
            if schema_id is None:
                schema_id = len(self.schemas) + 1
                self.schemas[schema_id] = schema
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def posts(self) -> list[str]:
        return [path for method, path in self.requests if method == "POST"]


class _Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _unhandled(self) -> None:
        self.server.unhandled.append((self.command, self.path))
        self._answer(404, {"error_code": 404, "message": "not implemented by FakeRegistry"})

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        match = re.fullmatch(r"/schemas/ids/(\d+)(\?.*)?", self.path)
        if not match:
            return self._unhandled()
        schema = self.server.schemas.get(int(match[1]))
        if schema is None:
            return self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        return self._answer(200, {"schema": schema})

    def do_POST(self) -> None:
        self.server.requests.append(("POST", self.path))
        match = re.fullmatch(r"/subjects/([^/?]+)/versions(\?.*)?", self.path)
        if not match:
            return self._unhandled()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if body.get("schemaType", "AVRO") != "AVRO":
            return self._answer(422, {"error_code": 42201, "message": "not Avro"})
        subject = match[1]
        if subject in self.server.refuse:
            return self._answer(409, {"error_code": 409, "message": "incompatible schema"})
        return self._answer(200, {"id": self.server.add(subject, body["schema"])})


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
    assert not server.unhandled, f"client called endpoints FakeRegistry lacks: {server.unhandled}"


def client(url: str, **kwargs: Any) -> ConfluentRegistry:
    return ConfluentRegistry(url, timeout=kwargs.pop("timeout", 2.0), **kwargs)


def v2_schemas() -> dict[str, dict[str, Any]]:
    """Every current schema, but Sale (and so SaleBatch) with an added optional field."""
    named: dict[str, Any] = {}
    out = {}
    for short, filename in SCHEMA_FILES.items():
        raw = json.loads((SCHEMAS_DIR / filename).read_text(encoding="utf-8"))
        if short == "sale":
            raw["fields"].append(CHANNEL)
        out[short] = fastavro.parse_schema(raw, named_schemas=named)
    return out


def test_round_trip_sale_and_batch(registry):
    writer = Codec(registry=client(registry.url))
    sale = writer.encode("sale", SALE)
    batch = writer.encode("sale_batch", {"sales": [SALE, SALE]})
    reader = Codec(registry=client(registry.url))  # knows nothing: looks the ids up
    decoded = reader.decode(sale)
    assert (decoded.name, decoded.record) == ("sale", SALE)
    decoded = reader.decode(batch)
    assert (decoded.name, decoded.record) == ("sale_batch", {"sales": [SALE, SALE]})
    assert writer.decode(batch).record == {"sales": [SALE, SALE]}
    assert writer.encode_many("sale", [SALE, SALE]) == [sale, sale]
    # each id is looked up once; then the codec's cache answers
    for _ in range(3):
        reader.decode(sale)
    gets = [path for method, path in registry.requests if method == "GET"]
    assert sorted(gets) == ["/schemas/ids/1", "/schemas/ids/2"]


def test_framing_is_magic_zero_and_big_endian_schema_id(registry):
    registry.add("com.example.Other", '"string"')  # so our ids do not start at 1
    codec = Codec(registry=client(registry.url))
    data = codec.encode("sale", SALE)
    assert data[:1] == b"\x00"
    schema_id = int.from_bytes(data[1:5], "big")
    assert schema_id == 2
    assert registry.subjects["com.salesflow.Sale"] == [2]  # record-name strategy
    assert json.loads(registry.schemas[2]) == json.loads(schema_json(codec.schemas["sale"]))
    assert codec.header("sale") == b"\x00\x00\x00\x00\x02"
    assert data[5:] == Codec().encode("sale", SALE)[10:]  # the same Avro body
    assert codec.decode(data).fingerprint == b"\x00\x00\x00\x00\x02"
    # registered once per schema, however many records are encoded
    codec.encode_many("sale", [SALE] * 5)
    codec.encode("customer", {"customer_id": 1, "first_name": "a", "last_name": "b",
                              "address": "c", "pincode": "d", "phone_number": "e",
                              "customer_joining_date": None})
    assert registry.posts() == ["/subjects/com.salesflow.Sale/versions?normalize=False",
                                "/subjects/com.salesflow.dim.Customer/versions?normalize=False"]


def test_batch_schema_text_carries_the_sale_it_contains(registry):
    text = json.loads(schema_json(load_schemas()["sale_batch"]))
    assert text["fields"][0]["type"]["items"]["name"] == "com.salesflow.Sale"
    assert "__named_schemas" not in json.dumps(text)
    fastavro.parse_schema(text)  # standalone: parses without any named types


def test_v1_reader_reads_v2_writer_and_back(registry):
    v1 = Codec(registry=client(registry.url))
    v2 = Codec(v2_schemas(), registry=client(registry.url))
    new_sale = v2.encode("sale", {**SALE, "channel": "web"})
    new_batch = v2.encode("sale_batch", {"sales": [{**SALE, "channel": "web"}]})
    old_sale = v1.encode("sale", SALE)
    old_batch = v1.encode("sale_batch", {"sales": [SALE]})
    assert len(registry.subjects["com.salesflow.Sale"]) == 2  # two versions, one subject
    assert len(registry.subjects["com.salesflow.SaleBatch"]) == 2

    fresh_v1 = Codec(registry=client(registry.url))
    assert fresh_v1.decode(new_sale).record == SALE  # the new field is dropped
    assert fresh_v1.decode(new_batch).record == {"sales": [SALE]}
    assert v1.decode(new_sale).record == SALE

    fresh_v2 = Codec(v2_schemas(), registry=client(registry.url))
    assert fresh_v2.decode(old_sale).record == {**SALE, "channel": None}  # default fills it
    assert fresh_v2.decode(old_batch).record == {"sales": [{**SALE, "channel": None}]}


def test_unknown_schema_id_is_undecodable(registry):
    codec = Codec(registry=client(registry.url))
    data = codec.encode("sale", SALE)
    unknown = b"\x00" + (4242).to_bytes(4, "big") + data[5:]
    with pytest.raises(DecodeError, match="schema id 4242 not found"):
        codec.decode(unknown)
    with pytest.raises(DecodeError, match="not found"):  # remembered: no second request
        codec.decode(unknown)
    assert registry.requests.count(("GET", "/schemas/ids/4242")) == 1


def test_schema_of_a_record_we_do_not_read_is_undecodable(registry):
    other = registry.add("com.example.Other", json.dumps(
        {"type": "record", "name": "Other", "namespace": "com.example",
         "fields": [{"name": "x", "type": "int"}]}))
    primitive = registry.add("com.example.Text", '"string"')
    codec = Codec(registry=client(registry.url))
    with pytest.raises(DecodeError, match=r"com\.example\.Other"):
        codec.decode(b"\x00" + other.to_bytes(4, "big") + b"\x02")
    with pytest.raises(DecodeError, match="not a record"):
        codec.decode(b"\x00" + primitive.to_bytes(4, "big") + b"\x02a")


def test_single_object_messages_still_decode_with_a_registry(registry):
    codec = Codec(registry=client(registry.url))
    old = Codec().encode("sale_batch", {"sales": [SALE]})
    assert codec.decode(old).record == {"sales": [SALE]}
    assert codec.decode(old).fingerprint == old[2:10]
    assert registry.requests == []  # no registry needed for them


def test_confluent_message_without_a_registry_is_undecodable(registry):
    data = Codec(registry=client(registry.url)).encode("sale", SALE)
    with pytest.raises(DecodeError, match="no schema registry is configured"):
        Codec().decode(data)


def test_every_truncation_is_undecodable(registry):
    codec = Codec(registry=client(registry.url))
    data = codec.encode("sale", SALE)
    for cut in range(1, len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:cut])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"x")


def test_registry_down_during_decode_is_undecodable_not_a_crash(registry):
    writer = Codec(registry=client(registry.url))
    known, unknown = writer.encode("sale", SALE), writer.encode("customer", {
        "customer_id": 1, "first_name": "a", "last_name": "b", "address": "c",
        "pincode": "d", "phone_number": "e", "customer_joining_date": None})
    reader = Codec(registry=client(registry.url, timeout=0.5, retries=0))
    assert reader.decode(known).record == SALE  # id now cached
    registry.shutdown()
    registry.server_close()  # nothing listens on the port: connection refused
    started = time.monotonic()
    with pytest.raises(DecodeError, match="unreachable"):
        reader.decode(unknown)
    with pytest.raises(DecodeError, match="unavailable"):  # fails fast for a few seconds
        reader.decode(unknown)
    assert time.monotonic() - started < 5
    assert reader.decode(known).record == SALE  # cached ids keep working


def test_registry_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        codec = Codec(registry=client(url, timeout=0.5, retries=0))
        started = time.monotonic()
        with pytest.raises(DecodeError, match="unreachable"):
            codec.decode(b"\x00\x00\x00\x00\x07\x02")
        assert time.monotonic() - started < 5


def test_registry_refusing_a_schema_fails_the_encode(registry):
    registry.refuse.add("com.salesflow.Sale")
    codec = Codec(registry=client(registry.url))
    with pytest.raises(ConfigError, match=r"refused com\.salesflow\.Sale"):
        codec.encode("sale", SALE)


def test_codec_for_settings(registry):
    assert codec_for(Settings(_env_file=None)).registry is None  # type: ignore[call-arg]
    settings = Settings(_env_file=None, schema_registry_url=registry.url)  # type: ignore[call-arg]
    codec = codec_for(settings)
    assert isinstance(codec.registry, ConfluentRegistry)
    assert codec.decode(codec.encode("sale", SALE)).record == SALE
