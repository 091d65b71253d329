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
The URL may carry `user:password@` credentials: it is never put into a message or a log.
"""

from __future__ import annotations

import time
from typing import Protocol

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from salesflow.errors import ConfigError, DecodeError, DependencyUnavailable

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


class ConfluentRegistry:
    """`Registry` over confluent-kafka's `SchemaRegistryClient`, with caching."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, missing_ttl: float = 60.0,
                 down_ttl: float = 5.0, client: SchemaRegistryClient | None = None) -> None:
        self.client = client or SchemaRegistryClient({
            "url": url,
            "timeout": timeout,
            "max.retries": retries,
            "retries.wait.ms": 100,
            "retries.max.wait.ms": 1000,
        })
        self.missing_ttl = missing_ttl
        self.down_ttl = down_ttl
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}
        self._missing: dict[int, float] = {}  # id -> monotonic time until which it is "missing"
        self._down_until = 0.0

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
            self._down_until = time.monotonic() + self.down_ttl
            raise RegistryUnavailable(
                f"schema registry unreachable looking up schema id {schema_id}: "
                f"{type(exc).__name__}") from exc
        if not isinstance(schema_str, str):
            raise SchemaNotFound(f"schema registry returned no schema for id {schema_id}")
        self._missing.pop(schema_id, None)
        self._schemas[schema_id] = schema_str
        return schema_str


def _describe(exc: SchemaRegistryError) -> str:
    return f"HTTP {exc.http_status_code}, error {exc.error_code}: {exc.error_message}"
