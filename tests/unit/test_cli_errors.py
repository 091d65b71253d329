"""Every usage mistake and bad setting is one line on stderr and a non-zero exit, never a
traceback: the real console script in a subprocess, as a user runs it. If a dependency
upgrade (typer, click, pydantic) brings tracebacks back, these fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from salesflow_cli.main import package_version


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
    return subprocess.run([sys.executable, "-m", "salesflow_cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=clean | env)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("salesflow: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(("args", "code", "says"), [
    (("produce", "sales", "nope.csv"), 2, "'nope.csv' does not exist"),
    (("produce", "dims"), 2, "Missing argument"),
    (("status", "--jsn"), 2, "No such option: --jsn"),
    (("nope",), 2, "No such command 'nope'"),
    (("produce", "generate"), 2, "give --out DIR"),
    (("marts", "export", "--out", "x", "--format", "xls"), 1, "unknown export format 'xls'"),
    (("marts", "show"), 1, "give --customer ID"),
    (("stack", "kafka", "nope"), 1, "unknown Kafka tool 'nope'"),
    (("dlq", "show", "--reason", "nope"), 1, "unknown reason 'nope'"),
    (("anomalies", "--rule", "nope"), 2,
     "'nope' is not one of 'price_off_list', 'multi_store_day', 'customer_spend_spike', "
     "'salesperson_spike'"),
    (("anomalies", "--since", "2026-13-01"), 2, "'2026-13-01' does not match"),
    (("anomalies", "--since", "yesterday"), 2, "'yesterday' does not match"),
    # the default mart database (an SQLite file in the working folder) has no flags table
    (("anomalies",), 1, "has no table sales_anomalies"),
])
def test_usage_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], code: int,
                                   says: str) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == code, done.stderr
    assert says in one_line(done)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SALESFLOW_FLUSH_INTERVAL_SECONDS", "abc",
     "SALESFLOW_FLUSH_INTERVAL_SECONDS='abc' is not valid"),
    ("SALESFLOW_FLUSH_INTERVAL_SECONDS", "0", "expected a number > 0"),
    ("SALESFLOW_NAMESPACE", "bad ns!", "expected letters, digits, '.', '_' and '-' only"),
    ("SALESFLOW_KAFKA_SECURITY_PROTOCOL", "TLS", "expected one of PLAINTEXT, SSL"),
    ("SALESFLOW_METRICS_PORT", "99999", "expected a whole number >= 0 and <= 65535"),
])
def test_a_bad_setting_is_one_line(tmp_path: Path, name: str, value: str, says: str) -> None:
    done = run(tmp_path, "status", **{name: value})
    assert done.returncode == 1
    line = one_line(done)
    assert says in line and name in line


def test_a_misspelled_setting_is_named_with_the_closest_one(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SALESFLOW_NAMESAPCE=mine\n# SALESFLOW_NOPE=commented\n")
    done = run(tmp_path, "dlq", "show", "--reason", "nope",
               SALESFLOW_MART_DB_ULR="sqlite:///mine.db")
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, done.stderr
    assert "SALESFLOW_MART_DB_ULR (in the environment)" in warnings[0]
    assert "did you mean SALESFLOW_MART_DB_URL?" in warnings[0]
    assert "SALESFLOW_NAMESAPCE (in .env)" in warnings[1]
    assert "did you mean SALESFLOW_NAMESPACE?" in warnings[1]
    assert "Traceback" not in done.stderr


def test_version_help_and_completion(tmp_path: Path) -> None:
    done = run(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"salesflow {package_version()}"
    helped = run(tmp_path, "--help", COLUMNS="120")
    assert helped.returncode == 0
    for verb in ("status", "stream", "tail", "demo", "stack", "produce", "marts", "dlq",
                 "anomalies"):
        assert f" {verb} " in helped.stdout, verb
    assert "--install-completion" in helped.stdout
    marts = run(tmp_path, "marts", "--help", COLUMNS="120")
    for verb in ("follow", "flush", "rebuild", "export", "show"):
        assert f" {verb} " in marts.stdout, verb
    completed = run(tmp_path, _SALESFLOW_COMPLETE="complete_bash", COMP_WORDS="salesflow mar",
                    COMP_CWORD="1")
    assert completed.returncode == 0 and "marts" in completed.stdout, completed


def test_help_does_not_import_the_heavy_modules(tmp_path: Path) -> None:
    """`--help` lists every verb without loading Kafka clients, SQLAlchemy or pyarrow."""
    code = ("import sys; from salesflow_cli.main import main; main(['--help']); "
            "print(sorted(m for m in ('sqlalchemy', 'pyarrow', 'pandas', 'fastavro', "
            "'mart_builder.builder', 'producers.sales') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
