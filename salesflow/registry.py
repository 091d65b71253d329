"""The schema registry behind the Confluent wire format (`SALESFLOW_SCHEMA_REGISTRY_URL`).

`Codec` only needs two calls, `register(subject, schema_str) -> id` and `schema(id) -> str`;
`ConfluentRegistry` provides them over confluent-kafka's `SchemaRegistryClient` (the REST API
of Confluent Schema Registry, also spoken by Karapace and Redpanda), with its own caches:

- ids and schema strings never change once assigned, so both are cached for the process;
- an id the registry does not know is remembered for `missing_ttl` seconds, so a stream of
  messages with a bad id does not send one request per message;
- after the registry failed to answer, lookups of *unknown* ids fail fast for `down_ttl`
  seconds instead of each waiting `timeout` × (retries + 1). Cached ids keep working.

Errors are salesflow errors: `SchemaNotFound` (the registry answered: no such id),
`RegistryUnavailable` (it did not answer, or answered 5xx; transient), `ConfigError` (it
refused a registration, e.g. an incompatible schema change, or rejected our credentials).

TLS and credentials come from the settings like every Kafka client's: `client_config`
reads `SALESFLOW_SCHEMA_REGISTRY_SSL_CA_FILE` (and a client certificate and key for mutual
TLS), `SALESFLOW_SCHEMA_REGISTRY_USERNAME` and the secret `SALESFLOW_SCHEMA_REGISTRY_PASSWORD`
(environment or `SALESFLOW_SECRETS_DIR`). The URL may still carry `user:password@`: it is
never put into a message or a log.
"""

from __future__ import annotations

import ssl
import time
from typing import Protocol

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from salesflow.errors import ConfigError, DecodeError, DependencyUnavailable
from salesflow.settings import Settings

# Short enough that a stream worker does not stall for long on a registry that is down.
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 1


class Registry(Protocol):
    """What `Codec` needs of a schema registry."""

    def register(self, subject: str, schema_str: str) -> int: ...

    def schema(self, schema_id: int) -> str: ...


class RegistryUnavailable(DependencyUnavailable):
    """The schema registry did not answer (or answered with a server error); transient."""


class SchemaNotFound(DecodeError):
    """The schema registry answered that it has no schema with this id."""


def client_config(settings: Settings) -> dict[str, str]:
    """`SchemaRegistryClient` settings for TLS and basic auth (the caller adds the URL): the
    one place that turns the registry's security settings into client configuration."""
    conf: dict[str, str] = {}
    if settings.schema_registry_ssl_ca_file is not None:
        conf["ssl.ca.location"] = str(settings.schema_registry_ssl_ca_file)
    cert, key = settings.schema_registry_ssl_cert_file, settings.schema_registry_ssl_key_file
    if key is not None and cert is None:
        raise ConfigError("SALESFLOW_SCHEMA_REGISTRY_SSL_KEY_FILE needs "
                          "SALESFLOW_SCHEMA_REGISTRY_SSL_CERT_FILE")
    if cert is not None:
        conf["ssl.certificate.location"] = str(cert)
    if key is not None:
        conf["ssl.key.location"] = str(key)
    user, password = settings.schema_registry_username, settings.schema_registry_password
    if (user is None) != (password is None):
        raise ConfigError("registry basic auth needs both SALESFLOW_SCHEMA_REGISTRY_USERNAME "
                          "and SALESFLOW_SCHEMA_REGISTRY_PASSWORD")
    if user is not None and password is not None:
        conf["basic.auth.user.info"] = f"{user}:{password.get_secret_value()}"
    return conf


class ConfluentRegistry:
    """`Registry` over confluent-kafka's `SchemaRegistryClient`, with caching."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, missing_ttl: float = 60.0,
                 down_ttl: float = 5.0, client: SchemaRegistryClient | None = None,
                 security: dict[str, str] | None = None) -> None:
        try:
            self.client = client or SchemaRegistryClient({
                "url": url,
                "timeout": timeout,
                "max.retries": retries,
                "retries.wait.ms": 100,
                "retries.max.wait.ms": 1000,
                **(security or {}),
            })
        except ValueError as exc:  # the client's own checks; some repeat the URL
            raise ConfigError("schema registry settings: "
                              + str(exc).replace(url, "SALESFLOW_SCHEMA_REGISTRY_URL")) from None
        self.missing_ttl = missing_ttl
        self.down_ttl = down_ttl
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}
        self._missing: dict[int, float] = {}  # id -> monotonic time until which it is "missing"
        self._down_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: float) -> ConfluentRegistry:
        """The registry of `SALESFLOW_SCHEMA_REGISTRY_URL`, with its TLS and credentials."""
        if not settings.schema_registry_url:
            raise ConfigError("SALESFLOW_SCHEMA_REGISTRY_URL is not set")
        return cls(settings.schema_registry_url, security=client_config(settings), **kwargs)

    def register(self, subject: str, schema_str: str) -> int:
        """Register (idempotent in the registry) and return the schema's global id."""
        key = (subject, schema_str)
        schema_id = self._ids.get(key)
        if schema_id is None:
            try:
                schema_id = self.client.register_schema(subject, Schema(schema_str, "AVRO"))
            except SchemaRegistryError as exc:
                if exc.http_status_code >= 500 or exc.http_status_code in (408, 429):
                    raise RegistryUnavailable(
                        f"schema registry failed to register {subject}: {_describe(exc)}"
                    ) from exc
                raise ConfigError(
                    f"schema registry refused {subject}: {_describe(exc)}") from exc
            except Exception as exc:  # httpx transport errors, timeouts, bad responses
                _raise_if_tls(exc)
                raise RegistryUnavailable(
                    f"schema registry unreachable registering {subject}: {type(exc).__name__}"
                ) from exc
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, schema_str)
        return schema_id

    def schema(self, schema_id: int) -> str:
        """The schema string of a global id."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        now = time.monotonic()
        if self._missing.get(schema_id, 0.0) > now:
            raise SchemaNotFound(f"schema id {schema_id} not found in the schema registry")
        if self._down_until > now:
            raise RegistryUnavailable(
                f"schema registry unavailable (failed in the last {self.down_ttl:g}s); "
                f"schema id {schema_id} not looked up")
        try:
            schema_str = self.client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                self._missing[schema_id] = now + self.missing_ttl
                raise SchemaNotFound(
                    f"schema id {schema_id} not found in the schema registry") from exc
            self._down_until = time.monotonic() + self.down_ttl
            raise RegistryUnavailable(
                f"schema registry failed looking up schema id {schema_id}: {_describe(exc)}"
            ) from exc
        except Exception as exc:  # httpx transport errors, timeouts, bad responses
            _raise_if_tls(exc)
            self._down_until = time.monotonic() + self.down_ttl
            raise RegistryUnavailable(
                f"schema registry unreachable looking up schema id {schema_id}: "
                f"{type(exc).__name__}") from exc
        if not isinstance(schema_str, str):
            raise SchemaNotFound(f"schema registry returned no schema for id {schema_id}")
        self._missing.pop(schema_id, None)
        self._schemas[schema_id] = schema_str
        return schema_str


def _raise_if_tls(exc: BaseException) -> None:
    """A failed TLS handshake is a setting to fix, not an outage: say which (ConfigError)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise ConfigError(
                "TLS to the schema registry failed: its certificate is not trusted "
                f"({cause.verify_message}); set SALESFLOW_SCHEMA_REGISTRY_SSL_CA_FILE to the "
                "CA that signed it") from exc
        if isinstance(cause, ssl.SSLError):
            raise ConfigError(f"TLS to the schema registry failed: {cause.reason or cause}"
                              ) from exc
        cause = cause.__cause__ or cause.__context__


def _describe(exc: SchemaRegistryError) -> str:
    return f"HTTP {exc.http_status_code}, error {exc.error_code}: {exc.error_message}"
