"""Certificates and keys for a local control plane, made with the `openssl` command.

One CA signs the API server's serving certificate and one client certificate in the
``system:masters`` group, which the controllers, the scheduler, kwok and the user's kubeconfig
share. The service-account signing key is a separate EC key.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""

SERVER_SANS = (
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the files `make_pki` writes."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _openssl(*args: str | Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl is required to make the cluster's certificates")
    proc = subprocess.run(
        [exe, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _ec_key_args() -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]


def server_sans(addresses: Sequence[str] = ()) -> list[str]:
    """The serving certificate's names: SERVER_SANS and the further IP `addresses` the API
    server listens on (a local stack's: the host end of its pod network's veth)."""
    sans = list(SERVER_SANS)
    sans += [f"IP:{a}" for a in addresses if f"IP:{a}" not in sans]
    return sans


def make_pki(directory: Path, addresses: Sequence[str] = ()) -> Pki:
    """Write a CA, a serving certificate (for SERVER_SANS and `addresses`), an admin client
    certificate and the SA key pair."""
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(sans=", ".join(server_sans(addresses))))
    days = "3650"
    _openssl(
        "req", "-x509", *_ec_key_args(), "-config", config, "-extensions", "ca",
        "-subj", "/CN=scaleserve-dev-ca", "-days", days,
        "-keyout", pki.ca_key, "-out", pki.ca_crt,
    )  # fmt: skip
    signed = ["-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key), "-days", days]
    _openssl(
        "req", "-x509", *_ec_key_args(), "-config", config, "-extensions", "server",
        "-subj", "/CN=kube-apiserver", *signed,
        "-keyout", pki.server_key, "-out", pki.server_crt,
    )  # fmt: skip
    _openssl(
        "req", "-x509", *_ec_key_args(), "-config", config, "-extensions", "client",
        "-subj", "/O=system:masters/CN=scaleserve-admin", *signed,
        "-keyout", pki.admin_key, "-out", pki.admin_crt,
    )  # fmt: skip
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pki.sa_key
    )
    _openssl("pkey", "-in", pki.sa_key, "-pubout", "-out", pki.sa_pub)
    config.unlink()
    return pki
