"""The lab's PKI: a CA, the API server's certificate, the admin's bearer token and the key that
signs ServiceAccount tokens, made once per lab."""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    cert: Path
    key: Path
    token: str
    service_account_key: Path | None = None     # sa.key: signs ServiceAccount tokens (ES256)


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_pki(pki_dir: Path, ips: list[str]) -> Pki:
    """Create what is missing in pki_dir (ca.crt/key, apiserver.crt/key, token); keep the rest."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = pki_dir / "ca.crt", pki_dir / "ca.key"
    crt, key = pki_dir / "apiserver.crt", pki_dir / "apiserver.key"
    token_file = pki_dir / "token"
    sa_key = pki_dir / "sa.key"
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650)

    if not (ca_crt.exists() and ca_key.exists()):
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeweft-lab-ca")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                .sign(k, hashes.SHA256()))
        _write(ca_key, _pem_key(k))
        _write(ca_crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        crt.unlink(missing_ok=True)      # a new CA invalidates the old server certificate

    if not (crt.exists() and key.exists()):
        ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        ca_k = serialization.load_pem_private_key(ca_key.read_bytes(), None)
        k = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(["127.0.0.1", *ips])]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
                .issuer_name(ca.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_k, hashes.SHA256()))
        _write(key, _pem_key(k))
        _write(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    if not token_file.exists():
        _write(token_file, secrets.token_urlsafe(32).encode())
    if not sa_key.exists():
        _write(sa_key, _pem_key(ec.generate_private_key(ec.SECP256R1())))
    return Pki(ca_crt, crt, key, token_file.read_text().strip(), sa_key)
