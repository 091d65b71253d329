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
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from salesflow.errors import ConfigError


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
    metrics_bind: str = "127.0.0.1"  # 0.0.0.0 in containers

    # --- wire format and topics ---
    schema_registry_url: str | None = None
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)

    # --- security (interface.md): every Kafka client of the project, and the mart database ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = \
        "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_ssl_ca_file: Path | None = None  # PEM of the CA of the brokers (default: system CAs)
    kafka_ssl_cert_file: Path | None = None  # client certificate (mutual TLS)
    kafka_ssl_key_file: Path | None = None  # its private key
    mart_db_ssl_ca_file: Path | None = None  # set: TLS to MySQL is required and verified
    schema_registry_ssl_ca_file: Path | None = None  # PEM CA of an https registry
    schema_registry_ssl_cert_file: Path | None = None  # client certificate (mutual TLS)
    schema_registry_ssl_key_file: Path | None = None  # its private key (unencrypted)
    schema_registry_username: str | None = None  # HTTP basic auth

    # --- secrets (never on a command line, never printed) ---
    mart_db_password: SecretStr | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_key_password: SecretStr | None = None  # passphrase of the client key, if any
    schema_registry_password: SecretStr | None = None  # HTTP basic auth

    # --- metric rules that metrics.md calls configurable ---
    as_of: date | None = None
    inactive_after_days: int = Field(90, ge=0)
    premium_threshold: Decimal = Decimal("10000.00")
    regular_threshold: Decimal = Decimal("2000.00")
    incentive_rate: Decimal = Decimal("0.01")

    # --- anomaly flags (anomalies.md): thresholds, and a switch for the stream's share ---
    anomalies: bool = True  # off: the stream keeps no anomaly state (for measuring its cost)
    anomaly_price_tolerance_percent: Decimal = Field(Decimal(20), ge=0)
    anomaly_multi_store_min_stores: int = Field(3, ge=2)
    anomaly_spend_spike_factor: Decimal = Field(Decimal(5), gt=0)
    anomaly_spend_spike_min_months: int = Field(3, ge=1)
    anomaly_salesperson_spike_factor: Decimal = Field(Decimal(3), gt=0)
    anomaly_salesperson_spike_months: int = Field(3, ge=1)

    # --- producers ---
    # How long a producer rides out a Kafka outage: no broker at the start, or records not
    # acknowledged (librdkafka's delivery timeout), before it gives up with one line.
    producer_outage_seconds: float = Field(300.0, gt=0, le=86_400)

    # --- stream app ---
    state_dir: Path = Path(".salesflow-state")  # on-disk table state (RocksDB), per worker slot
    recovery_timeout_seconds: float = Field(600.0, gt=0)  # a worker recovering longer exits
    commit_interval_seconds: float = Field(0.1, gt=0, le=60)  # one transaction at most this long
    max_batch_messages: int = Field(2000, ge=1, le=100_000)  # messages taken per poll
    transaction_timeout_seconds: float = Field(10.0, ge=1, le=900)  # a dead worker's open one
    session_timeout_seconds: float = Field(6.0, ge=1, le=300)  # a killed worker is noticed

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
        """librdkafka/confluent-kafka settings shared by every client we build: the one place
        that turns the security settings into client configuration."""
        protocol = self.kafka_security_protocol
        conf = {"bootstrap.servers": self.kafka_bootstrap, "security.protocol": protocol}
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ConfigError(f"SALESFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                                  "SALESFLOW_KAFKA_SASL_USERNAME and SALESFLOW_KAFKA_SASL_PASSWORD")
            conf |= {"sasl.mechanisms": self.kafka_sasl_mechanism,
                     "sasl.username": self.kafka_sasl_username,
                     "sasl.password": self.kafka_sasl_password.get_secret_value()}
        elif self.kafka_sasl_username or self.kafka_sasl_password is not None:
            raise ConfigError("SASL credentials are set but SALESFLOW_KAFKA_SECURITY_PROTOCOL is "
                              f"{protocol}: use SASL_SSL (or SASL_PLAINTEXT)")
        if protocol in ("SSL", "SASL_SSL"):
            for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"):
                path = getattr(self, name)
                if path is not None and not path.is_file():  # "" would be "." (a CA dir)
                    raise ConfigError(f"SALESFLOW_{name.upper()}={path} is not a file")
            if self.kafka_ssl_ca_file is not None:
                conf["ssl.ca.location"] = str(self.kafka_ssl_ca_file)
            if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
                raise ConfigError("mutual TLS needs both SALESFLOW_KAFKA_SSL_CERT_FILE and "
                                  "SALESFLOW_KAFKA_SSL_KEY_FILE")
            if self.kafka_ssl_cert_file is not None and self.kafka_ssl_key_file is not None:
                conf["ssl.certificate.location"] = str(self.kafka_ssl_cert_file)
                conf["ssl.key.location"] = str(self.kafka_ssl_key_file)
            if self.kafka_ssl_key_password is not None:
                conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        elif self.kafka_ssl_cert_file or self.kafka_ssl_ca_file or self.kafka_ssl_key_file:
            raise ConfigError("TLS files are set but SALESFLOW_KAFKA_SECURITY_PROTOCOL is "
                              f"{protocol}: use SSL or SASL_SSL")
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    secrets_dir = os.environ.get("SALESFLOW_SECRETS_DIR")
    return Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
