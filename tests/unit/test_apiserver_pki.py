"""The lab's PKI: a CA-signed server certificate with the names clients use, made once."""
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from kubeweft.lab.apiserver.pki import ensure_pki


def test_certificate_names_and_signature(tmp_path):
    pki = ensure_pki(tmp_path / "pki", ["192.168.56.1"])
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("192.168.56.1")}
    assert {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"} <= \
        set(san.get_values_for_type(x509.DNSName))
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert len(pki.token) >= 32
    assert oct((tmp_path / "pki" / "apiserver.key").stat().st_mode & 0o777) == "0o600"


def test_existing_pki_is_kept(tmp_path):
    first = ensure_pki(tmp_path, ["192.168.56.1"])
    cert_bytes = first.cert.read_bytes()
    again = ensure_pki(tmp_path, ["192.168.56.1"])
    assert again.token == first.token and again.cert.read_bytes() == cert_bytes
    first.cert.unlink()                      # a missing server cert is remade under the same CA
    third = ensure_pki(tmp_path, ["192.168.56.1"])
    assert third.cert.read_bytes() != cert_bytes and third.token == first.token
