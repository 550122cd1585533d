"""Certificates: the names a Secret's certificate serves, and the self-signed default one that
ingress-nginx presents when no Secret serves a host ("Kubernetes Ingress Controller Fake
Certificate"). Uses the cryptography package."""
from __future__ import annotations

import datetime


def certificate_names(cert_pem: bytes, key_pem: bytes) -> tuple[tuple[str, ...], str]:
    """The DNS names a PEM certificate serves, and "" or why the pair cannot be used."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        return (), f"cannot parse: {e}"
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        return (), "tls.key does not match tls.crt"
    try:
        names = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                      .value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return names, ""


def make_certificate(common_name: str, dns_names: tuple[str, ...] = (), days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed EC P-256 certificate: (certificate PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days)))
    if dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                                        critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"


def make_default_certificate() -> bytes:
    """ingress-nginx's default: the key and certificate in one PEM, as nginx reads it for both."""
    cert, key = make_certificate(FAKE_CN, ("ingress.local",))
    return key + cert
