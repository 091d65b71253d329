"""The secured stack's certificates and credentials, made locally with openssl (nothing fetched).

    <stack_dir>/secure/pki/          ca.pem (+ ca.key), broker.pem/.key, broker-keystore.pem,
                                     mariadb.pem/.key, <role>.pem/.key for each client role
    <stack_dir>/secure/credentials/  one generated secret per file (SCRAM passwords, client key
                                     passphrases, the MariaDB password); mode 0600

A private CA signs two server certificates (the broker, MariaDB; both for 127.0.0.1 and
localhost) and one client certificate per role, whose CN is the role: the broker maps it to
the principal `User:<role>`, the same principal as the role's SCRAM user. Client keys are
encrypted (PKCS#8, AES-256) with their own passphrase, handed to openssl through a file so
that no secret is ever on a command line. Everything is made once and kept across restarts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from salesflow.errors import StackError
from salesflow.stack import _proc

CLIENT_ROLES = ("admin", "producer", "stream", "marts")  # admin: the broker's super user
SCRAM_ROLES = ("producer", "stream", "marts")  # one SCRAM user per role of the pipeline
SERVERS = ("broker", "mariadb")
DAYS_CA = 3650
DAYS_LEAF = 825
_SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class Pki:
    """Where one secured stack keeps its certificates and generated secrets."""

    root: Path  # <stack_dir>/secure

    @property
    def dir(self) -> Path:
        return self.root / "pki"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def broker_keystore(self) -> Path:
        """The broker's key and certificate chain in one PEM file (Kafka's PEM keystore)."""
        return self.dir / "broker-keystore.pem"

    def secret(self, name: str) -> str:
        """A generated secret (made on first use, then kept)."""
        path = self.credentials / name
        if not path.is_file():
            self.credentials.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(path, secrets.token_urlsafe(24))
        return path.read_text().strip()

    def scram_password(self, role: str) -> str:
        return self.secret(f"scram-{role}")

    def key_password(self, role: str) -> str:
        return self.secret(f"key-{role}")

    def mysql_password(self) -> str:
        return self.secret("mysql-salesflow")


def ensure(pki: Pki) -> None:
    """Make whatever is missing: the CA, the server certificates, the client certificates."""
    pki.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = pki.root / "openssl.log"
    openssl = shutil.which("openssl")
    if openssl is None and _proc.apt_install("openssl", pki.root / "apt.log"):
        openssl = shutil.which("openssl")
    if openssl is None:
        raise StackError("openssl is not installed (the secured stack makes its own "
                         "certificates with it): apt-get install openssl")
    if not (pki.ca_cert.is_file() and pki.ca_key.is_file()):
        _run(openssl, log, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", pki.ca_key, "-out", pki.ca_cert, "-days", DAYS_CA,
             "-subj", "/O=salesflow/CN=salesflow local CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name in SERVERS:
        if not (pki.cert(name).is_file() and pki.key(name).is_file()):
            _leaf(openssl, log, pki, name, server=True)
    if not pki.broker_keystore.is_file():
        _write_private(pki.broker_keystore,
                       pki.key("broker").read_text() + pki.cert("broker").read_text()
                       + pki.ca_cert.read_text())
    for role in CLIENT_ROLES:
        if not (pki.cert(role).is_file() and pki.key(role).is_file()):
            _leaf(openssl, log, pki, role, server=False)


def _leaf(openssl: str, log: Path, pki: Pki, name: str, server: bool) -> None:
    """A key and a certificate signed by the CA. Servers get the loopback names (the broker
    also connects to itself, so it is a TLS client too); clients get an encrypted key."""
    with tempfile.TemporaryDirectory(dir=pki.dir) as tmp:
        work = Path(tmp)
        plain_key, csr, ext = work / "key.pem", work / "req.csr", work / "ext.cnf"
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        ext.write_text(f"{_SAN if server else ''}\nextendedKeyUsage={usage}\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n")
        _run(openssl, log, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", plain_key,
             "-out", csr, "-subj", f"/O=salesflow/CN={name}")
        _run(openssl, log, "x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", pki.ca_key,
             "-CAcreateserial", "-CAserial", pki.dir / "ca.srl", "-days", DAYS_LEAF,
             "-extfile", ext, "-out", work / "cert.pem")
        if server:
            os.replace(plain_key, pki.key(name))
        else:
            passfile = work / "pass"
            _write_private(passfile, pki.key_password(name))
            _run(openssl, log, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", plain_key,
                 "-passout", f"file:{passfile}", "-out", work / "enc.pem")
            os.replace(work / "enc.pem", pki.key(name))
        pki.key(name).chmod(0o600)
        os.replace(work / "cert.pem", pki.cert(name))


def _run(openssl: str, log: Path, *args: object) -> None:
    if not _proc.run_logged([openssl, *map(str, args)], log):
        raise StackError(f"openssl {args[0]} failed; see {log}:\n{_proc.tail(log, 5)}")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created so, never widened for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
