"""`salesflow status` on the real stack: before anything, before any worker, with a live
worker and sales waiting for a dimension, after a flush, and with the worker gone.

Every call is the real console script in a subprocess (what a user runs)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.sales import produce_sales
from salesflow.settings import Settings
from tests.workers import MartFollower, StreamWorker, wait_until_processed, worker_env

pytestmark = pytest.mark.integration


def cli(settings: Settings, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "salesflow_cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=worker_env(settings, **env))


def status(settings: Settings, cwd: Path) -> tuple[int, dict]:
    done = cli(settings, cwd, "status", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_status_answers_are_we_keeping_up(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"unknown_ref_retry_seconds": 3600})
    code, report = status(settings, tmp_path)
    assert code == 1 and not report["namespace_has_topics"]
    assert any("has no topics" in n for n in report["notes"])

    data = tmp_path / "data"
    sales = generate(data, GenerateSpec(rows=3000, customers=200, bad_fraction=0.05))
    produce_dims(settings, data)
    summary = produce_sales(settings, [sales], batch_size=100)
    code, report = status(settings, tmp_path)
    assert code == 0, {k: report[k] for k in ("kafka_error", "database_error", "notes")}
    assert report["namespace"] == settings.namespace and report["time"].endswith("UTC")
    assert report["topics"]["sales"] == f"{settings.namespace}.sales"
    assert report["topics"]["group"] == f"{settings.namespace}-stream"
    assert any("no worker has run" in n and "salesflow stream" in n for n in report["notes"])
    assert sum(report["lag"].values()) > 0 and report["lag_sales"] > 0

    with StreamWorker(settings, tmp_path):
        wait_until_processed(settings)
        code, report = status(settings, tmp_path)
        assert code == 0, report
        assert len(report["workers"]) == 1
        assert sorted(report["workers"][0]["partitions"]) == list(range(settings.partitions))
        assert report["records_in"] == summary.sent
        assert report["pending"] > 0, "the generator's unknown ids wait an hour here"
        assert report["first_dead_letter_due"], report
        assert report["reconciled"] and report["records_in"] == (
            report["accepted"] + report["exact_replays"] + report["dead_lettered_total"]
            + report["pending"])
        assert sum(report["producer_dead_lettered"].values()) == summary.dead_lettered > 0
        assert report["dlq_matches"], report
        assert sum(report["lag"].values()) == 0 and report["lag_sales"] == 0
        assert report["catch_up_seconds"] == 0
        assert report["in_per_second"] > 0 and report["accepted_per_second"] > 0
        assert report["last_flush"] is None
        text = cli(settings, tmp_path, "status", COLUMNS="200")
        assert text.returncode == 0, text.stderr
        assert "accepted + replays + dead-lettered + waiting" in text.stdout
        assert "from producers" in text.stdout and "workers" in text.stdout

        watching = subprocess.Popen([sys.executable, "-m", "salesflow_cli", "status",
                                     "--watch", "1"], stdout=subprocess.PIPE, text=True,
                                    stderr=subprocess.PIPE, cwd=tmp_path,
                                    env=worker_env(settings, COLUMNS="200"))
        time.sleep(8)
        watching.send_signal(signal.SIGINT)
        out, err = watching.communicate(timeout=30)
        assert watching.returncode == 0 and "Traceback" not in err, err
        assert "accepted + replays + dead-lettered + waiting" in out

        with MartFollower(settings, tmp_path, "follower"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                code, report = status(settings, tmp_path)
                if report["last_flush"]:
                    break
                time.sleep(1)
        assert report["last_flush"] and report["last_flush_age_seconds"] < 60
        assert report["mart_rows"]["customers_data_mart"] > 0

    code, report = status(settings, tmp_path)
    assert code == 0 and report["workers"] == []
    assert any("no worker is running" in n for n in report["notes"])


def test_status_with_kafka_down_is_one_line_or_json(settings: Settings, tmp_path: Path) -> None:
    down = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    text = cli(down, tmp_path, "status")
    assert text.returncode == 1 and "Traceback" not in text.stderr + text.stdout
    assert "no Kafka broker answered at 127.0.0.1:1" in " ".join(text.stdout.split())
    code, report = status(down, tmp_path)
    assert code == 1 and report["kafka_error"] and not report["healthy"]
