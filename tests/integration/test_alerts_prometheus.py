"""The alert rules in a real Prometheus (Debian's, installed with apt-get when missing) that
scrapes a real `salesflow stream` and a real `salesflow marts follow`, while the database and
then Kafka go away (private services on free ports, so nothing shared is disturbed).

promtool's unit tests (tests/unit/ops) check each rule on made-up series; this checks the
series the processes really export: a counter born at 1 never increases, a gauge a process
never sets stays at its default, a job that exports a metric at 0 that it never uses...

Prometheus scrapes and evaluates every second here; the rules are the shipped ones.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.sales import produce_sales
from salesflow.anomalies import RULES as ANOMALY_RULES
from salesflow.settings import Settings
from salesflow.stack import kafka as stack_kafka
from salesflow.stack import mariadb as stack_mariadb
from tests.apt import ensure_binary
from tests.workers import MartFollower, StreamWorker, wait_until_processed

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"


def free_port(pair: bool = False) -> int:
    """A free loopback port (with `pair`, the next one is free too: Kafka's controller)."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


class Prometheus:
    """One Prometheus process with the project's rules and two static targets."""

    def __init__(self, tmp: Path, stream_port: int, marts_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "salesflow-stream",
                 "static_configs": [{"targets": [f"127.0.0.1:{stream_port}"]}]},
                {"job_name": "salesflow-marts",
                 "static_configs": [{"targets": [f"127.0.0.1:{marts_port}"]}]},
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        self.proc = subprocess.Popen(
            [ensure_binary("prometheus", "prometheus"),
             f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def get(self, path: str) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)["data"]

    def alerts(self) -> list[tuple[str, str, dict]]:
        """(alertname, state, labels) of every pending or firing alert."""
        return [(a["labels"]["alertname"], a["state"], a["labels"])
                for a in self.get("/api/v1/alerts")["alerts"]]

    def wait_targets_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                targets = self.get("/api/v1/targets")["activeTargets"]
                if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                    return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"targets not up: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def watch(prom: Prometheus, allowed: set[str], until, timeout: float, what: str) -> set:
    """Poll the alerts until `until(alerts)` holds; any alert outside `allowed` fails."""
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        alerts = prom.alerts()
        seen |= {(name, state) for name, state, _ in alerts}
        stray = [(n, s, labels) for n, s, labels in alerts if n not in allowed]
        assert not stray, f"{what}: unexpected alerts {stray}"
        if until(alerts):
            return seen
        time.sleep(1)
    raise AssertionError(f"{what}: not reached in {timeout:.0f}s; alerts seen: {sorted(seen)}")


def metric(port: int, name: str) -> float:
    """The value of an unlabelled metric on a process's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith(name + " "))


def firing(alerts, name: str, **labels: str) -> bool:
    return any(n == name and s == "firing" and all(lab.get(k) == v for k, v in labels.items())
               for n, s, lab in alerts)


def test_alerts_fire_in_a_real_prometheus(settings: Settings, tmp_path: Path) -> None:
    kafka_port, db_port = free_port(pair=True), free_port()
    broker = settings.model_copy(update={"stack_dir": tmp_path / "kafka-stack",
                                         "kafka_bootstrap": f"127.0.0.1:{kafka_port}"})
    db = settings.model_copy(update={"stack_dir": tmp_path / "db-stack", "mysql_port": db_port})
    stream_port, marts_port = free_port(), free_port()
    stack_kafka.up(broker)
    stack_mariadb.up(db)
    prom = None
    try:
        live = broker.model_copy(update={"mart_db_url": stack_mariadb.url(db)})
        data = tmp_path / "data"
        sales = generate(data, GenerateSpec(rows=2000, customers=100, bad_fraction=0.01))
        produce_dims(live, data)
        with StreamWorker(live, tmp_path, SALESFLOW_METRICS_PORT=str(stream_port)) as worker, \
                MartFollower(live, tmp_path, "follower",
                             SALESFLOW_METRICS_PORT=str(marts_port)) as follower:
            prom = Prometheus(tmp_path, stream_port, marts_port)
            prom.wait_targets_up()
            produce_sales(live, [sales], batch_size=100)
            wait_until_processed(live)
            time.sleep(5)  # a flush, and a few scrapes and evaluations of everything

            # Healthy: nothing pending, nothing firing.
            for _ in range(5):
                assert prom.alerts() == [], prom.alerts()
                time.sleep(1)

            # SalesflowAnomalyFlagsSurge has what it counts on: the follower's flag counter,
            # one series per rule from the start (a week without flags is an average of 0),
            # and its expression evaluates without error.
            flagged = prom.get("/api/v1/query?query=" + urllib.parse.quote(
                'salesflow_anomalies_flagged_total{job="salesflow-marts"}'))["result"]
            assert sorted(s["metric"]["rule"] for s in flagged) == sorted(ANOMALY_RULES), flagged
            assert all(float(s["value"][1]) >= 0 for s in flagged), flagged
            surge = [rule for group in prom.get("/api/v1/rules")["groups"]
                     for rule in group["rules"] if rule["name"] == "SalesflowAnomalyFlagsSurge"]
            assert len(surge) == 1 and surge[0]["health"] == "ok", surge

            # The database goes away: flushes fail, the dependency failure fires. (From here on,
            # SalesflowMartsBehind may be pending: the newest sale in the marts ages past 60 s
            # while the 5-minute rate of sales in is still above 0.)
            stack_mariadb.down(db)
            seen = watch(prom, {"SalesflowDependencyFailing", "SalesflowMartFlushesFailing",
                                "SalesflowMartsBehind"},
                         lambda a: firing(a, "SalesflowDependencyFailing",
                                          dependency="database", job="salesflow-marts"),
                         150, "database down")
            assert ("SalesflowMartFlushesFailing", "pending") in seen
            assert "Kafka unreachable" not in worker.log_text()

            # The database is back (a flush succeeds), then Kafka goes away.
            stack_mariadb.up(db)
            back, deadline = time.time(), time.monotonic() + 60
            while metric(marts_port, "salesflow_mart_last_success_timestamp_seconds") < back:
                assert time.monotonic() < deadline, follower.log_text()[-2000:]
                time.sleep(1)
            stack_kafka.down(broker)
            seen = watch(prom, {"SalesflowKafkaUnreachable", "SalesflowDependencyFailing",
                                "SalesflowMartFlushesFailing", "SalesflowMartsBehind"},
                         lambda a: firing(a, "SalesflowKafkaUnreachable",
                                          job="salesflow-stream")
                         and firing(a, "SalesflowKafkaUnreachable", job="salesflow-marts"),
                         150, "Kafka down")
            assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
            log = worker.log_text()
            assert log.count("Kafka unreachable") == 1, log[-3000:]
            assert log.count(" ERROR ") + log.count(" WARNING ") < 20, log[-3000:]

            # Kafka is back: the workers say so once and the alert resolves.
            stack_kafka.up(broker)
            watch(prom, {"SalesflowKafkaUnreachable", "SalesflowDependencyFailing",
                         "SalesflowMartFlushesFailing", "SalesflowMartsBehind"},
                  lambda a: not any(n == "SalesflowKafkaUnreachable" for n, _, _ in a),
                  90, "Kafka back")
            assert "Kafka reachable again" in worker.log_text()
    finally:
        if prom is not None:
            prom.stop()
        stack_kafka.down(broker, wipe=True)
        stack_mariadb.down(db, wipe=True)
