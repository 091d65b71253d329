"""The Docker deployment files: docker-compose.yml, Dockerfile, .env.example and the ops/ configs.

No network and no Docker engine: the compose file is parsed with PyYAML and checked
structurally, and a real compose client (`docker compose` v2, or Debian's `docker-compose`,
installed with apt-get when neither is there) must resolve it: with no .env at all (the dev
profile: dev passwords) and with the secrets set (theirs replace the dev ones).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from salesflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
OPS = ROOT / "ops"

APP_SERVICES = ("stream", "marts", "producer")
NAMED_VOLUMES = ("kafka-data", "mysql-data", "prometheus-data", "alertmanager-data",
                 "grafana-data")
#: the secrets compose needs from .env; dummy values for `config`
COMPOSE_SECRETS = ("MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD", "GRAFANA_MYSQL_PASSWORD",
                   "GRAFANA_ADMIN_PASSWORD")

SECRET_NAME = re.compile(r"(?i)(passw(or)?d|secret|token|api[_-]?key|credential)")
# `KEY: value` or `KEY=value` (either may sit in a list item), on one line.
ASSIGNMENT = re.compile(
    r"""^\s*(?:-\s*)?["']?(?P<key>[A-Za-z_][\w.-]*)["']?\s*[:=]\s*(?P<value>.*)$""")
VAR_REF = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)")


def _load(path: Path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE.is_file(), "docker-compose.yml is missing"
    data = _load(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _one_shot(service: dict) -> bool:
    return str(service.get("restart", "")).lower() == "no"


def _long_running(services: dict) -> dict:
    return {name: svc for name, svc in services.items() if not _one_shot(svc)}


def _volume_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service, short or long syntax."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, _, rest = str(entry).partition(":")
            mounts.append((source, rest.split(":")[0]))
    return mounts


def _is_named(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def _literal_secrets(text: str) -> list[str]:
    """Lines that give a secret-looking key a literal value rather than a ${...} reference,
    a file path (`..._FILE`, a mounted secret) or a Grafana $__env/$__file lookup."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        match = ASSIGNMENT.match(line)
        if not match or not SECRET_NAME.search(match["key"]):
            continue
        key, value = match["key"], match["value"].strip().strip("\"'")
        if not value or value in {"|", ">"} or value.startswith(("${", "$__env{", "$__file{")):
            continue
        if key.lower().endswith("_file") or value.startswith(("/run/secrets/", "./secrets/")):
            continue
        found.append(f"{number}: {line.strip()}")
    return found


# --- the secret detector itself, so that a miss cannot pass silently ---

@pytest.mark.parametrize("line", [
    "MYSQL_PASSWORD: hunter2",
    "      MYSQL_ROOT_PASSWORD: 'example'",
    "  - GF_SECURITY_ADMIN_PASSWORD=admin",
    "    password: s3cret",
    "SALESFLOW_KAFKA_SASL_PASSWORD=abc",
    "api_key: 0123456789",
])
def test_secret_detector_flags_literals(line: str) -> None:
    assert _literal_secrets(line), line


@pytest.mark.parametrize("line", [
    "MYSQL_PASSWORD: ${MYSQL_PASSWORD:?set MYSQL_PASSWORD in .env}",
    "  - MYSQL_PASSWORD=${MYSQL_PASSWORD}",
    "password: $__env{GRAFANA_MYSQL_PASSWORD}",
    "MYSQL_PASSWORD_FILE: /run/secrets/mysql_password",
    "# MYSQL_PASSWORD: in a comment",
    "secrets:",
])
def test_secret_detector_passes_references(line: str) -> None:
    assert not _literal_secrets(line), line


# --- docker-compose.yml ---

def test_compose_has_the_services(services: dict) -> None:
    expected = {"kafka", "mysql", "stream", "marts", "producer", "prometheus", "alertmanager",
                "grafana"}
    assert expected <= set(services), sorted(expected - set(services))


def test_every_long_running_service_has_a_healthcheck(services: dict) -> None:
    long_running = _long_running(services)
    assert {"kafka", "mysql", "stream", "prometheus", "alertmanager", "grafana"} <= set(
        long_running)
    for name, service in long_running.items():
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert test and test != ["NONE"], f"{name}: empty healthcheck test"
        assert check.get("interval") and check.get("retries"), name


def test_healthchecks_probe_the_right_endpoints(services: dict) -> None:
    def probe(name: str) -> str:
        test = services[name]["healthcheck"]["test"]
        return " ".join(test) if isinstance(test, list) else test

    assert "kafka-broker-api-versions.sh" in probe("kafka") or "kafka-topics.sh" in probe(
        "kafka")
    assert "mysqladmin" in probe("mysql") and "ping" in probe("mysql")
    assert "urllib" in probe("stream") and "localhost:9464/metrics" in probe("stream")
    assert "/-/healthy" in probe("prometheus")
    assert "/-/healthy" in probe("alertmanager")
    assert "/api/health" in probe("grafana")


def test_named_volumes_are_declared_and_used(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    assert set(NAMED_VOLUMES) <= declared, sorted(set(NAMED_VOLUMES) - declared)
    used = set()
    for name, service in services.items():
        for source, _target in _volume_mounts(service):
            if _is_named(source):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert set(NAMED_VOLUMES) <= used, sorted(set(NAMED_VOLUMES) - used)
    targets = {name: dict((s, t) for s, t in _volume_mounts(svc)) for name, svc in services.items()}
    assert targets["kafka"]["kafka-data"] == services["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert targets["mysql"]["mysql-data"] == "/var/lib/mysql"


def test_bind_mounts_point_at_files_in_the_repo(services: dict) -> None:
    for name, service in services.items():
        for source, _target in _volume_mounts(service):
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_app_services_build_from_the_dockerfile(services: dict) -> None:
    images = set()
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build, f"{name} is not built from the repo"
        context, dockerfile = ((build, "Dockerfile") if isinstance(build, str)
                               else (build.get("context", "."), build.get("dockerfile",
                                                                          "Dockerfile")))
        assert (ROOT / context).resolve() == ROOT, f"{name}: build context {context}"
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE.resolve()
        images.add(services[name].get("image"))
    assert len(images) == 1, f"stream and producer should share one image: {images}"


def test_stream_service(services: dict) -> None:
    stream = services["stream"]
    assert stream["command"] in (["stream"], "stream")
    env = stream["environment"]
    assert env["SALESFLOW_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["SALESFLOW_MART_DB_URL"] == "mysql+pymysql://salesflow@mysql:3306/salesflow"
    assert str(env["SALESFLOW_METRICS_PORT"]) == "9464"
    assert str(env["SALESFLOW_MART_DB_PASSWORD"]).startswith("${MYSQL_PASSWORD")
    for dependency in ("kafka", "mysql"):
        assert stream["depends_on"][dependency]["condition"] == "service_healthy"
    assert stream.get("deploy", {}).get("replicas", 1) >= 2
    assert "container_name" not in stream, "a fixed name stops the workers from scaling"
    assert not stream.get("ports"), "a fixed host port stops the workers from scaling"


def test_producer_is_one_shot(services: dict) -> None:
    producer = services["producer"]
    command = producer["command"]
    command = command if isinstance(command, list) else command.split()
    assert command[:3] == ["produce", "generate", "--to-kafka"]
    assert "--rows" in command and "--bad-fraction" in command
    assert _one_shot(producer) or "demo" in producer.get("profiles", [])
    assert producer["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kafka_is_single_node_kraft(services: dict) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "-Xmx768m" in env["KAFKA_HEAP_OPTS"]
    assert "PLAINTEXT://:9092" in env["KAFKA_LISTENERS"]
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:9093")
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert value == "1", key


def test_dependents_wait_for_healthy_services(services: dict) -> None:
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if isinstance(spec, dict) and dependency in _long_running(services):
                assert spec.get("condition") == "service_healthy", f"{name} -> {dependency}"


def test_no_literal_secrets_in_the_compose_file(compose: dict) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert not _literal_secrets(text), _literal_secrets(text)
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        pairs = (env.items() if isinstance(env, dict)
                 else (str(e).partition("=")[::2] for e in env))
        for key, value in pairs:
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Za-z_]\w*(:?[?-][^}]*)?\}", str(value)), (
                    f"{name}.{key} must be a ${{VAR}} reference, not a literal")
    # Secrets given as files are paths to files, never inline content.
    for secret_name, secret in (compose.get("secrets") or {}).items():
        assert set(secret) <= {"file", "environment", "external", "name"}, secret_name
        assert "content" not in secret


def test_compose_variables_are_documented(compose: dict) -> None:
    documented = _env_example_names()
    text = "\n".join(line for line in COMPOSE.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    used = set(VAR_REF.findall(text))
    assert used, "expected ${...} references in docker-compose.yml"
    assert used <= documented, sorted(used - documented)


def _compose_cli() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    from tests.apt import ensure_binary

    return [ensure_binary("docker-compose", "docker-compose")]


def _resolved(tmp_path: Path, env_text: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "given.env"
    env_file.write_text(env_text)
    # Only PATH and HOME from outside, so a developer's .env or exports cannot mask a gap.
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    return subprocess.run([*_compose_cli(), "--env-file", str(env_file), "-f", str(COMPOSE),
                           "--project-directory", str(ROOT), "config"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_compose_cli_accepts_the_file_with_the_secrets_set(tmp_path: Path) -> None:
    webhook = tmp_path / "alert_webhook_url"
    webhook.write_text("https://hooks.example.invalid/salesflow\n")
    done = _resolved(tmp_path, "".join(f"{name}=given-{name.lower()}\n"
                                       for name in COMPOSE_SECRETS)
                     + f"ALERT_WEBHOOK_URL_FILE={webhook}\n")
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(done.stdout)
    text = done.stdout
    assert "dev-only-" not in text, "a given password must replace every dev default"
    assert config["services"]["mysql"]["environment"]["MYSQL_PASSWORD"] == \
        "given-mysql_password"
    assert config["services"]["stream"]["environment"]["SALESFLOW_MART_DB_PASSWORD"] == \
        "given-mysql_password"
    assert str(config["secrets"]["alert_webhook_url"]["file"]) == str(webhook)


def test_a_first_compose_up_needs_no_env_file(tmp_path: Path) -> None:
    """The documented dev profile: no .env, no invented passwords; compose resolves."""
    done = _resolved(tmp_path, "")
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert services["mysql"]["environment"]["MYSQL_PASSWORD"].startswith("dev-only-")
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "dev-only-")
    webhook = Path(config["secrets"]["alert_webhook_url"]["file"])
    assert webhook.is_file() and "127.0.0.1" in webhook.read_text()
    assert "dev profile" in COMPOSE.read_text().lower()


def test_host_ports_are_loopback_and_do_not_clash_with_the_local_stack(services: dict) -> None:
    """Alertmanager's 9093 is the controller port of `salesflow stack up` (broker 9092 + 1)."""
    local = {9092, 9093, 3306}
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip, rest = str(port).split(":", 1)
            host_port = rest.rsplit(":", 1)[0]
            default = re.fullmatch(r"\$\{\w+:-(\d+)\}", host_port)
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            number = int(default.group(1) if default else host_port)
            assert number not in local, f"{name}: host port {number} clashes"


def test_app_services_serve_metrics_to_prometheus(services: dict) -> None:
    for name in ("stream", "marts"):
        env = services[name]["environment"]
        assert env["SALESFLOW_METRICS_BIND"] == "0.0.0.0", name
        assert str(env["SALESFLOW_METRICS_PORT"]) == "9464"
    marts = services["marts"]
    assert marts["command"] == ["marts", "follow"]
    config = _load(OPS / "prometheus" / "prometheus.yml")
    names = {n for job in config["scrape_configs"] for dns in job.get("dns_sd_configs", [])
             for n in dns["names"]}
    assert {"stream", "marts"} <= names


# --- Dockerfile and .dockerignore ---

def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_entrypoint_is_salesflow() -> None:
    instructions = _dockerfile_instructions()
    entrypoints = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert yaml.safe_load(entrypoints[-1]) == ["salesflow"], entrypoints[-1]


def test_dockerfile_base_user_and_install() -> None:
    instructions = _dockerfile_instructions()
    args = {rest.partition("=")[0]: rest.partition("=")[2]
            for keyword, rest in instructions if keyword == "ARG"}
    bases = [rest.split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
             for keyword, rest in instructions if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, users[-1]
    last_stage = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    assert any(keyword == "USER" for keyword, _ in instructions[last_stage:])
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", runs), "the project is not pip-installed"
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    for needed in ("pyproject.toml", "README.md", "schemas", "salesflow", "producers",
                   "stream_app", "mart_builder", "salesflow_cli"):
        assert needed in copied, f"the build does not copy {needed}"
    exposed = " ".join(rest for keyword, rest in instructions if keyword == "EXPOSE")
    assert "9464" in exposed


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".venv", ".stack", ".env", ".git", ".pytest_cache", ".ruff_cache", "*.db"):
        assert needed in patterns, needed
    for kept in ("salesflow", "producers", "stream_app", "mart_builder", "schemas",
                 "pyproject.toml", "README.md"):
        assert kept not in patterns, f"{kept} is needed by the build"


# --- .env.example ---

def _env_example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_env_example_documents_every_setting() -> None:
    names = _env_example_names()
    settings = {f"SALESFLOW_{field.upper()}" for field in Settings.model_fields}
    assert settings <= names, sorted(settings - names)
    interface = ROOT / "docs" / "spec" / "interface.md"
    spec = set(re.findall(r"`(SALESFLOW_[A-Z_]+)`", interface.read_text(encoding="utf-8")))
    assert spec <= names, sorted(spec - names)


def test_env_example_has_no_real_secrets() -> None:
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match and SECRET_NAME.search(match.group(1)) and not match.group(1).endswith(
                "_FILE"):
            assert match.group(2).strip() == "", f"placeholder only: {line}"


# --- ops/ configuration ---

def test_prometheus_scrapes_the_stream_workers() -> None:
    config = _load(OPS / "prometheus" / "prometheus.yml")
    jobs = config["scrape_configs"]
    targets = set()
    for job in jobs:
        for static in job.get("static_configs", []):
            targets |= set(static.get("targets", []))
        for dns in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{dns.get('port')}" for name in dns.get("names", [])}
    assert "stream:9464" in targets, targets
    rule_files = config.get("rule_files", [])
    assert any(Path(rule).name == "alerts.yml" for rule in rule_files), rule_files
    managers = config["alerting"]["alertmanagers"]
    assert any("alertmanager:9093" in s.get("targets", [])
               for m in managers for s in m.get("static_configs", []))
    alerts = _load(OPS / "prometheus" / "alerts.yml")
    assert isinstance(alerts, dict) and isinstance(alerts.get("groups"), list)


def test_alertmanager_reads_the_webhook_url_from_a_secret(services: dict) -> None:
    path = OPS / "alertmanager" / "alertmanager.yml"
    config = _load(path)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    hooks = [hook for r in receivers.values() for hook in r.get("webhook_configs", [])]
    assert hooks, "no webhook receiver"
    for hook in hooks:
        assert "url" not in hook, "the webhook URL must come from url_file"
        secret = Path(hook["url_file"]).name
        assert hook["url_file"].startswith("/run/secrets/")
        assert secret in services["alertmanager"].get("secrets", [])
    assert not _literal_secrets(path.read_text(encoding="utf-8"))
    assert not re.search(r"^\s*[^#\n]*https?://(?!localhost|127\.)", path.read_text(), re.M), (
        "no literal receiver URL in alertmanager.yml")


def test_grafana_provisioning() -> None:
    root = OPS / "grafana" / "provisioning"
    datasources = _load(root / "datasources" / "datasources.yml")
    by_type = {ds["type"]: ds for ds in datasources["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    mysql = by_type["mysql"]
    assert mysql["url"] == "mysql:3306"
    assert mysql["jsonData"]["database"] == "salesflow"
    assert re.fullmatch(r"\$__(env|file)\{[^}]+\}", mysql["secureJsonData"]["password"])
    assert not _literal_secrets((root / "datasources" / "datasources.yml").read_text())

    dashboards = _load(root / "dashboards" / "dashboards.yml")
    provider = dashboards["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert (OPS / "grafana" / "dashboards").is_dir()
    # The MySQL user Grafana logs in as is the one the MySQL init script creates.
    init = "".join(p.read_text() for p in (OPS / "mysql" / "initdb").glob("*.sh"))
    assert f"'{mysql['user']}'@" in init and "GRANT SELECT" in init


def test_grafana_mounts_match_provisioning(services: dict) -> None:
    dashboards = _load(OPS / "grafana" / "provisioning" / "dashboards" / "dashboards.yml")
    path = dashboards["providers"][0]["options"]["path"]
    mounts = dict(_volume_mounts(services["grafana"]))
    assert mounts.get("./ops/grafana/dashboards") == path
    assert mounts.get("./ops/grafana/provisioning") == "/etc/grafana/provisioning"
    datasources = _load(OPS / "grafana" / "provisioning" / "datasources" / "datasources.yml")
    mysql = next(ds for ds in datasources["datasources"] if ds["type"] == "mysql")
    env_name = re.fullmatch(r"\$__env\{([^}]+)\}", mysql["secureJsonData"]["password"])
    if env_name:
        assert env_name.group(1) in services["grafana"]["environment"]
