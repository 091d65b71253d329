"""Every setting of salesflow, read once from the environment and an optional `.env` file.

Names and defaults follow the interface spec (`SALESFLOW_*`). Secrets are `SecretStr`: their
repr and str are masked, and they are only ever read from the environment or from files
(`SALESFLOW_SECRETS_DIR`, one file per secret), never from the command line.
"""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SALESFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        secrets_dir=None,
    )

    # --- the interface spec's settings ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    namespace: str = Field("salesflow", pattern=r"^[A-Za-z0-9._-]+$")
    mart_db_url: str = "sqlite:///salesflow.db"
    flush_interval_seconds: float = Field(10.0, gt=0)
    unknown_ref_retry_seconds: float = Field(300.0, ge=0)
    metrics_port: int = Field(9464, ge=0, le=65535)

    # --- wire format and topics ---
    schema_registry_url: str | None = None
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)

    # --- secrets (never on a command line, never printed) ---
    mart_db_password: SecretStr | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    # --- metric rules that metrics.md calls configurable ---
    as_of: date | None = None
    inactive_after_days: int = Field(90, ge=0)
    premium_threshold: Decimal = Decimal("10000.00")
    regular_threshold: Decimal = Decimal("2000.00")
    incentive_rate: Decimal = Decimal("0.01")

    # --- stream app ---
    state_dir: Path = Path(".salesflow-state")  # on-disk table state (RocksDB), per worker slot
    recovery_timeout_seconds: float = Field(600.0, gt=0)  # a worker recovering longer exits

    # --- local stack (`salesflow stack`) ---
    stack_dir: Path = Path(".stack")
    cache_dir: Path = Path.home() / ".cache" / "salesflow"
    mysql_port: int = 3306

    # --- notifications (`salesflow.notify`): failures that need a person ---
    # Both URLs are secrets (a webhook URL is its own credential): never logged or printed.
    notify_webhook_url: SecretStr | None = None  # generic JSON webhook
    notify_slack_webhook_url: SecretStr | None = None  # Slack-compatible {"text": ...}
    notify_min_interval_seconds: float = Field(300.0, ge=0)  # at most one per kind per interval

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka/confluent-kafka settings shared by every client we build."""
        conf = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_sasl_username and self.kafka_sasl_password:
            conf |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanisms": "PLAIN",
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value(),
            }
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    secrets_dir = os.environ.get("SALESFLOW_SECRETS_DIR")
    return Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
