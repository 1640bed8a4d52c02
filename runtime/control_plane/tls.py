"""The control plane's TLS: given certificate files, or a CA and server certificate of its own made on first start
(the CA's fingerprint printed, so an operator can check what a gateway pins)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamforge.runtime.files import write_durably

CA_DAYS, SERVER_DAYS = 3650, 825


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # what gateways pin (--ca); None when the certificate came from elsewhere

    def fingerprint(self) -> str:
        """SHA-256 of the CA (or, without one, of the server certificate), as `openssl x509 -fingerprint` shows it."""
        pem = (self.ca or self.cert).read_bytes()
        digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
        return ":".join(f"{byte:02X}" for byte in digest)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StreamForge"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def self_signed(folder: Path, names: list[str]) -> TlsFiles:
    """`folder`'s CA and server certificate, made once (keys 0600). `names`: host names or IP addresses the
    server certificate is valid for, besides localhost, 127.0.0.1 and this host's name."""
    files = TlsFiles(folder / "server.pem", folder / "server-key.pem", folder / "ca.pem")
    if files.cert.exists() and files.key.exists() and files.ca and files.ca.exists():
        return files
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("StreamForge control plane CA"))
          .issuer_name(_name("StreamForge control plane CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    alternatives: list[x509.GeneralName] = []
    for name in dict.fromkeys(["localhost", "127.0.0.1", "::1", socket.gethostname(), *names]):
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder().subject_name(_name(socket.gethostname())).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
              .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))  # fmt: skip
    write_durably(folder / "ca-key.pem", _key_pem(ca_key))
    write_durably(files.key, _key_pem(server_key))
    write_durably(files.cert, server.public_bytes(serialization.Encoding.PEM), mode=0o644)
    assert files.ca is not None
    write_durably(files.ca, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return files
