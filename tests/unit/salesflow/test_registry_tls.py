"""The schema registry client over https with basic auth, configured by the settings alone.

`FakeRegistry` (test_registry.py) behind TLS, with a certificate of a CA made by the secured
stack's own `pki` (openssl, local), and a basic-auth check on every request.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from salesflow.codec import codec_for
from salesflow.errors import ConfigError
from salesflow.settings import Settings
from salesflow.stack.pki import Pki, ensure
from tests.unit.salesflow.test_registry import SALE, FakeRegistry, _Handler

PASSWORD = "s3cret-registry-pw"


class _AuthHandler(_Handler):
    def _authorized(self) -> bool:
        expected = "Basic " + base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") == expected:
            return True
        self.server.requests.append(("DENIED", self.path))
        self._answer(401, {"error_code": 401, "message": "Unauthorized"})
        return False

    def do_GET(self) -> None:
        if self._authorized():
            super().do_GET()

    def do_POST(self) -> None:
        if self._authorized():
            super().do_POST()


class TlsRegistry(FakeRegistry):
    def __init__(self, pki: Pki) -> None:
        super().__init__()
        self.RequestHandlerClass = _AuthHandler
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert("broker"), pki.key("broker"))
        self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_port}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    ensure(pki)
    return pki


@pytest.fixture
def registry(pki: Pki) -> Iterator[TlsRegistry]:
    server = TlsRegistry(pki)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def settings(registry: TlsRegistry, ca: Path | None, password: str | None = PASSWORD
             ) -> Settings:
    return Settings(_env_file=None, schema_registry_url=registry.url,  # type: ignore[call-arg]
                    schema_registry_ssl_ca_file=ca, schema_registry_username="reader",
                    schema_registry_password=SecretStr(password) if password else None)


def test_https_and_basic_auth_from_the_settings(registry, pki):
    codec = codec_for(settings(registry, pki.ca_cert))
    data = codec.encode("sale", SALE)
    fresh = codec_for(settings(registry, pki.ca_cert))
    assert fresh.decode(data).record == SALE
    assert registry.requests and not [r for r in registry.requests if r[0] == "DENIED"]


def test_an_untrusted_certificate_is_named_and_is_no_outage(registry):
    with pytest.raises(ConfigError, match="schema registry failed: its certificate is not "
                                          "trusted") as info:
        codec_for(settings(registry, None)).encode("sale", SALE)
    assert "SALESFLOW_SCHEMA_REGISTRY_SSL_CA_FILE" in str(info.value)
    assert registry.requests == []


def test_wrong_credentials_are_refused_without_showing_them(registry, pki):
    with pytest.raises(ConfigError, match="HTTP 401") as info:
        codec_for(settings(registry, pki.ca_cert, "wrong-pw")).encode("sale", SALE)
    assert "wrong-pw" not in str(info.value) and PASSWORD not in str(info.value)


def test_half_of_the_basic_auth_is_a_config_error(registry, pki):
    with pytest.raises(ConfigError, match="needs both"):
        codec_for(settings(registry, pki.ca_cert, None))
