"""A private MariaDB server (MySQL-compatible) for the marts, on 127.0.0.1:`settings.mysql_port`.

It has its own data dir under `settings.stack_dir/mariadb` and never touches a system MariaDB's
files or service. `root` has no password and is reachable from 127.0.0.1 only: this is a local
development and test service, not a deployment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from salesflow.errors import StackError
from salesflow.settings import Settings
from salesflow.stack import _proc
from salesflow.stack import secure as secure_stack
from salesflow.stack._proc import ServiceStatus
from salesflow.stack.pki import ensure as ensure_pki

HOST = "127.0.0.1"
DATABASE = "salesflow"
READY_TIMEOUT_SECONDS = 60.0
_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes


@dataclass(frozen=True)
class MariaDBPaths:
    """Where one stack's server keeps its files."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def out_log(self) -> Path:
        return self.root / "mariadbd.out"

    @property
    def pid_file(self) -> Path:
        """Ours, written at spawn; the server's own pid file is `mariadbd.pid`."""
        return self.root / "mariadb.pid"

    @property
    def socket(self) -> Path:
        """The admin socket; moved to /tmp when the stack dir's path is too long for one."""
        sock = self.root / "mysqld.sock"
        if len(str(sock)) <= _SOCKET_PATH_MAX:
            return sock
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(f"/tmp/salesflow-mariadb-{digest}.sock")


def paths(settings: Settings) -> MariaDBPaths:
    return MariaDBPaths(settings.stack_dir.expanduser().resolve() / "mariadb")


def url(settings: Settings) -> str:
    return f"mysql+pymysql://root@{HOST}:{settings.mysql_port}/{DATABASE}"


def _marker(settings: Settings) -> str:
    """What identifies our server's command line: the data dir of this stack."""
    return f"--datadir={paths(settings).data}"


def _find(names: tuple[str, ...]) -> str | None:
    """A binary on PATH or in the sbin dirs, which a non-root PATH often lacks."""
    for name in names:
        found = shutil.which(name) or next(
            (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d, name)).is_file()),
            None,
        )
        if found:
            return found
    return None


def _install(log: Path) -> None:
    """apt-get install mariadb-server when we are root; `apt-get update` only if that fails."""
    if not _proc.apt_install("mariadb-server", log) or _find(_SERVER_NAMES) is None:
        raise StackError(f"installing mariadb-server with apt-get failed; see {log}")


def _binaries(settings: Settings) -> tuple[str, str]:
    server, install_db = _find(_SERVER_NAMES), _find(_INSTALL_DB_NAMES)
    if server is None or install_db is None:
        _install(paths(settings).root / "apt.log")
        server, install_db = _find(_SERVER_NAMES), _find(_INSTALL_DB_NAMES)
    if server is None or install_db is None:
        raise StackError("MariaDB is not installed: apt-get install mariadb-server")
    return server, install_db


def _user_args() -> list[str]:
    """mariadbd refuses to run as root unless told to; as another user it runs as that user."""
    return ["--user=root"] if os.geteuid() == 0 else []


def _init_datadir(settings: Settings, install_db: str) -> None:
    """Create the system tables once; root gets a normal (empty) password, not unix_socket."""
    p = paths(settings)
    if (p.data / "mysql").is_dir():
        return
    shutil.rmtree(p.data, ignore_errors=True)  # a half-initialised dir from an earlier failure
    log = p.root / "install-db.log"
    log.unlink(missing_ok=True)
    argv = [install_db, "--no-defaults", f"--datadir={p.data}", "--skip-test-db"]
    argv += ["--auth-root-authentication-method=normal", *_user_args()]
    if not _proc.run_logged(argv, log):
        shutil.rmtree(p.data, ignore_errors=True)
        raise StackError(f"mariadb-install-db failed; see {log}:\n{_proc.tail(log, 5)}")


def up(settings: Settings, secure: bool = False) -> bool:
    """Start the server unless ours is already running; returns True if it started one.

    `secure`: TLS with a certificate of the stack's CA, required on every TCP connection;
    over TCP only the `salesflow` user (a generated password, REQUIRE SSL, the `salesflow*`
    databases) exists, root only on the server's socket.
    """
    p = paths(settings)
    if _proc.read_pid(p.pid_file, _marker(settings)) is not None:
        _wait_ready(settings, None, secure)
        return False
    if _proc.port_open(HOST, settings.mysql_port):
        raise StackError(
            f"{HOST}:{settings.mysql_port} is already in use by a process that `salesflow stack` "
            "did not start; stop it or set SALESFLOW_MYSQL_PORT"
        )
    p.root.mkdir(parents=True, exist_ok=True)
    server, install_db = _binaries(settings)
    _init_datadir(settings, install_db)
    tls: list[str] = []
    if secure:
        pki = secure_stack.pki(settings)
        ensure_pki(pki)
        tls = [f"--ssl-ca={pki.ca_cert}", f"--ssl-cert={pki.cert('mariadb')}",
               f"--ssl-key={pki.key('mariadb')}", "--require-secure-transport=ON",
               "--tls-version=TLSv1.2,TLSv1.3"]
    argv = [
        server,
        "--no-defaults",
        f"--datadir={p.data}",
        f"--port={settings.mysql_port}",
        f"--bind-address={HOST}",
        f"--socket={p.socket}",
        f"--pid-file={p.root / 'mariadbd.pid'}",
        f"--log-error={p.error_log}",
        "--skip-name-resolve",
        *_user_args(),
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        # Test-sized and fast rather than durable: a crash may lose the last second of commits.
        "--innodb-flush-log-at-trx-commit=2",
        "--innodb-buffer-pool-size=128M",
        "--innodb-log-file-size=64M",
        "--innodb-doublewrite=0",
        "--skip-log-bin",
        *tls,
    ]
    proc = _proc.spawn(argv, p.out_log, p.pid_file)
    try:
        _wait_ready(settings, proc, secure)
    except StackError:
        _proc.stop(p.pid_file, _marker(settings))
        raise
    return True


def _connect(**where: Any) -> pymysql.connections.Connection:
    """root, no password, at `host`/`port` or `unix_socket`."""
    return pymysql.connect(user="root", password="", connect_timeout=2, **where)


def _ensure_access(settings: Settings, secure: bool = False) -> None:
    """Make root@127.0.0.1 (TCP, no password) and the `salesflow` database exist; secured,
    the `salesflow` user (TLS required) instead of the TCP root.

    Done over the socket as root@localhost, which mariadb-install-db always creates, so it also
    repairs a data dir whose TCP root account went missing.
    """
    conn = _connect(unix_socket=str(paths(settings).socket))
    try:
        with conn.cursor() as cur:
            if secure:
                user = f"'{secure_stack.MYSQL_USER}'@'{HOST}'"
                password = secure_stack.pki(settings).mysql_password()
                cur.execute(f"DROP USER IF EXISTS 'root'@'{HOST}'")
                cur.execute(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY %s REQUIRE SSL",
                            (password,))
                cur.execute(f"ALTER USER {user} IDENTIFIED BY %s REQUIRE SSL", (password,))
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}%`.* TO {user}")
            else:
                cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{HOST}'")
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{HOST}' WITH GRANT OPTION")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
    finally:
        conn.close()


def is_ready(settings: Settings, secure: bool = False) -> bool:
    """True when root (secured: the `salesflow` user, over verified TLS) can connect over TCP
    and run a query."""
    try:
        if secure:
            pki = secure_stack.pki(settings)
            conn = pymysql.connect(
                user=secure_stack.MYSQL_USER, password=pki.mysql_password(), host=HOST,
                port=settings.mysql_port, connect_timeout=2,
                ssl={"ca": str(pki.ca_cert), "check_hostname": True, "verify_mode": True})
        else:
            conn = _connect(host=HOST, port=settings.mysql_port)
    except pymysql.MySQLError:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    finally:
        conn.close()


def _wait_ready(settings: Settings, proc: subprocess.Popen[bytes] | None,
                secure: bool = False) -> None:
    """Poll until the server takes connections; fail fast, with its log, if it exits."""
    p = paths(settings)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc is not None and not _proc.alive(proc):
            raise StackError(
                f"MariaDB exited during start (exit code {proc.returncode}); last lines of "
                f"{p.error_log}:\n{_proc.tail(p.error_log)}"
            )
        if p.socket.exists():
            try:
                _ensure_access(settings, secure)
            except pymysql.MySQLError:
                pass
            else:
                if is_ready(settings, secure):
                    return
        time.sleep(0.3)
    raise StackError(
        f"MariaDB did not take connections within {READY_TIMEOUT_SECONDS:.0f}s; see {p.error_log}"
    )


def down(settings: Settings, wipe: bool = False) -> int | None:
    """Stop our server (if running); returns its pid. `wipe` also deletes its data."""
    p = paths(settings)
    pid = _proc.stop(p.pid_file, _marker(settings))
    if wipe:
        shutil.rmtree(p.data, ignore_errors=True)
    return pid


def status(settings: Settings) -> ServiceStatus:
    p = paths(settings)
    pid = _proc.read_pid(p.pid_file, _marker(settings))
    return ServiceStatus(
        name="mariadb",
        running=pid is not None and _proc.port_open(HOST, settings.mysql_port),
        pid=pid,
        address=f"{HOST}:{settings.mysql_port}",
        since=_proc.pid_since(p.pid_file) if pid is not None else None,
        log_file=p.error_log,
        data_dir=p.data,
    )


def exports(settings: Settings) -> dict[str, str]:
    return {"SALESFLOW_MART_DB_URL": url(settings)}
