"""ops/prometheus/alerts.yml: valid for promtool, unit-tested rule by rule, routed, documented.

`promtool check rules` and `promtool test rules` (alerts.test.yml, and alerts.weekly.test.yml
for the rules whose windows span a week) must both pass; every alert must have a firing and a
non-firing case there; every rule uses only metrics that
salesflow/instrumentation.py exports, carries a severity that Alertmanager routes to a
webhook, and points at a runbook section that exists in docs/operations.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.ops.promql import metric_names

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "ops" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
# the week-long windows, evaluated every 30 minutes instead of every minute (see its header)
WEEKLY_TESTS = PROMETHEUS / "alerts.weekly.test.yml"
TEST_FILES = (ALERT_TESTS, WEEKLY_TESTS)
ALERTMANAGER = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

SEVERITIES = {"critical", "warning"}
#: the alerts the Operations issue asks for; more may be added, none of these removed
REQUIRED_ALERTS = {
    "SalesflowNoSalesArriving", "SalesflowDeadLetterShareHigh", "SalesflowRejectionReasonSpike",
    "SalesflowConsumerLagGrowing", "SalesflowMartsStale", "SalesflowWorkerDown",
    "SalesflowDependencyFailing",
    "SalesflowAnomalyFlagsSurge",  # the anomaly flags issue
}


def _load(path: Path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    groups = _load(ALERTS)["groups"]
    found = [rule for group in groups for rule in group["rules"]]
    assert found, "alerts.yml has no rules"
    return found


@pytest.fixture(scope="module")
def alerts(rules: list[dict]) -> dict[str, dict]:
    by_name: dict[str, dict] = {}
    for rule in rules:
        assert "alert" in rule, f"recording rules belong elsewhere: {rule}"
        assert rule["alert"] not in by_name, f"alert {rule['alert']} defined twice"
        by_name[rule["alert"]] = rule
    return by_name


def _run(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=300)


# --- promtool --------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    assert set(PROMETHEUS.glob("*.test.yml")) == set(TEST_FILES), "a test file nobody runs"
    result = _run(promtool, "test", "rules", *(path.name for path in TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert output.count("SUCCESS") == len(TEST_FILES), output


def test_a_broken_expectation_fails(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail at all: flip one expectation and promtool must say so."""
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text(encoding="utf-8"), encoding="utf-8")
    broken = ALERT_TESTS.read_text(encoding="utf-8").replace("severity: critical",
                                                             "severity: warning", 1)
    (tmp_path / ALERT_TESTS.name).write_text(broken, encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout


# --- coverage of the unit tests --------------------------------------------------------------


def test_required_alerts_exist(alerts: dict[str, dict]) -> None:
    assert set(alerts) >= REQUIRED_ALERTS, sorted(REQUIRED_ALERTS - set(alerts))


def test_every_alert_is_tested_firing_and_not_firing(alerts: dict[str, dict]) -> None:
    text = ""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        text += path.read_text(encoding="utf-8")
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert config["rule_files"] == [ALERTS.name], path.name
        for case in config["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    for name in alerts:
        assert name in text, f"{name} does not appear in {', '.join(p.name for p in TEST_FILES)}"
        assert name in firing, f"no case in which {name} fires"
        assert name in quiet, f"no case in which {name} stays quiet"
    unknown = (firing | quiet) - set(alerts)
    assert not unknown, f"tests of alerts that do not exist: {sorted(unknown)}"


# --- the rules themselves --------------------------------------------------------------------


def test_rules_have_severity_duration_and_annotations(alerts: dict[str, dict]) -> None:
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:`"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key), f"{name} has no {key} annotation"


def test_rules_use_only_exported_metrics(alerts: dict[str, dict],
                                         exported_metrics: set[str]) -> None:
    for name, rule in alerts.items():
        used = metric_names(rule["expr"])
        assert used, f"{name}: no metric found in its expression"
        assert used <= exported_metrics, (
            f"{name} uses metrics salesflow does not export: {sorted(used - exported_metrics)}")


def test_anomaly_surge_thresholds_are_the_documented_ones(alerts: dict[str, dict]) -> None:
    """The factor and the minimum live in the expression and in annotations of their own (for
    whoever reads the alert): tuning one without the other fails here."""
    rule = alerts["SalesflowAnomalyFlagsSurge"]
    expr, notes = " ".join(rule["expr"].split()), rule["annotations"]
    factor = re.search(r"\[1h\]\)\) > ([\d.]+) \* sum by \(job\) \( increase\("
                       r"salesflow_anomalies_flagged_total\{[^}]*\}\[7d\] offset 1h\) \) "
                       r"/ \(7 \* 24\)", expr)
    minimum = re.search(r"\[1h\]\)\) >= ([\d.]+)$", expr)
    assert factor and minimum, expr
    assert notes["surge_factor"] == factor[1] and notes["min_flags"] == minimum[1], notes
    assert f"more than {factor[1]} times (surge_factor)" in notes["description"]
    assert f"at least {minimum[1]} (min_flags)" in notes["description"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_runbooks_exist(alerts: dict[str, dict]) -> None:
    assert OPERATIONS.is_file(), "docs/operations.md is missing"
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    for name, rule in alerts.items():
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert (ROOT / path).resolve() == OPERATIONS.resolve(), f"{name}: runbook {path}"
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor}"
        assert anchor in anchors, f"{name}: no section `{name}` in docs/operations.md"


# --- Alertmanager routing --------------------------------------------------------------------

_MATCHER = re.compile(r'^\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def _matchers(route: dict) -> list[tuple[str, str, str]]:
    found = [(k, "=", str(v)) for k, v in (route.get("match") or {}).items()]
    found += [(k, "=~", str(v)) for k, v in (route.get("match_re") or {}).items()]
    for text in route.get("matchers") or []:
        match = _MATCHER.match(text)
        assert match, f"cannot read matcher {text!r}"
        found.append(match.groups())
    return found


def _matches(route: dict, labels: dict[str, str]) -> bool:
    for name, op, value in _matchers(route):
        got = labels.get(name, "")
        ok = {
            "=": got == value,
            "!=": got != value,
            "=~": re.fullmatch(value, got) is not None,
            "!~": re.fullmatch(value, got) is None,
        }[op]
        if not ok:
            return False
    return True


def route_receivers(route: dict, labels: dict[str, str], inherited: str) -> list[str]:
    """The receivers Alertmanager's routing tree gives an alert with these labels."""
    receiver = route.get("receiver", inherited)
    found: list[str] = []
    for child in route.get("routes") or []:
        if _matches(child, labels):
            found += route_receivers(child, labels, receiver)
            if not child.get("continue", False):
                break
    return found or [receiver]


def test_route_walker() -> None:
    tree = {"receiver": "default", "routes": [
        {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True},
        {"match_re": {"severity": "critical|warning"}, "receiver": "hook"},
    ]}
    assert route_receivers(tree, {"severity": "critical"}, "") == ["pager", "hook"]
    assert route_receivers(tree, {"severity": "warning"}, "") == ["hook"]
    assert route_receivers(tree, {"severity": "info"}, "") == ["default"]


def test_alertmanager_routes_every_severity_to_a_webhook(alerts: dict[str, dict]) -> None:
    config = _load(ALERTMANAGER)
    receivers = {r["name"]: r for r in config["receivers"]}
    for name, rule in alerts.items():
        labels = {"alertname": name, "job": "salesflow-stream", **rule["labels"]}
        targets = route_receivers(config["route"], labels, config["route"]["receiver"])
        assert targets, name
        for target in targets:
            receiver = receivers[target]
            assert receiver.get("webhook_configs") or receiver.get("slack_configs"), (
                f"{name} ({rule['labels']['severity']}) routes to {target}, which sends nothing")


def test_inhibition_keeps_critical_alerts(alerts: dict[str, dict]) -> None:
    """No inhibit rule may silence a critical alert."""
    config = _load(ALERTMANAGER)
    for inhibit in config.get("inhibit_rules") or []:
        targets = inhibit.get("target_matchers") or []
        assert not any('severity="critical"' in t.replace(" ", "") for t in targets), inhibit
