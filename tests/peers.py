"""Real protocol peers started as processes, for the tests and the benchmarks: Mosquitto (plain or TLS), a customer's
Kafka (SASL_SSL), and the certificates TLS brokers and their clients need."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka


@dataclass(frozen=True)
class Pki:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate, all as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path, name: str = "test") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
              signer: ec.EllipticCurvePrivateKey, usage: x509.ObjectIdentifier | None) -> x509.Certificate:  # fmt: skip
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        day = datetime.timedelta(days=1)
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - day).not_valid_after(now + day)
                   .add_extension(x509.BasicConstraints(usage is None, None), critical=True))  # fmt: skip
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
        return cert_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue(f"{name} CA", ca_key, None, ca_key, None)
    ca, _ = write("ca", ca_cert, ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = write("broker", issue("localhost", server_key, ca_cert.subject, ca_key, ExtendedKeyUsageOID.SERVER_AUTH),
                   server_key)  # fmt: skip
    client = write("gateway", issue("gateway", client_key, ca_cert.subject, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH),
                   client_key)  # fmt: skip
    return Pki(ca, *server, *client)


def start_mosquitto(
    workdir: Path, port: int, tls: Pki | None = None, max_inflight: int | None = 1000, users: Path | None = None
) -> subprocess.Popen[bytes]:
    """A real Mosquitto on `port`. For MQTT 3.1.1 clients a wide in-flight window (the default 20 would pace a
    consumer that acknowledges per Kafka batch; None keeps Mosquitto's default), no cap on queued QoS 1/2 messages (an
    overload waits in the broker) and $SYS figures every second. With `tls`, the listener speaks TLS and requires a
    client certificate. With `users` (a mosquitto_passwd file), only those users may connect."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise RuntimeError("Mosquitto is missing: `apt-get install mosquitto` (scripts/setup.sh does)")
    config = workdir / f"mosquitto-{port}.conf"
    listener = f"listener {port} 127.0.0.1\n"
    if tls is not None:  # clients must present a certificate from the same CA
        listener += (f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\n"
                     "require_certificate true\n")  # fmt: skip
    if tls is not None or users is not None:
        # Started by root, Mosquitto drops to its own user before loading files (certificates, users) it then cannot
        # read in pytest's private directories; started by anyone else, this line is ignored.
        listener = "user root\n" + listener
    inflight = "" if max_inflight is None else f"max_inflight_messages {max_inflight}\n"
    access = "allow_anonymous true\n" if users is None else f"allow_anonymous false\npassword_file {users}\n"
    config.write_text(f"{listener}{access}{inflight}max_queued_messages 0\npersistence false\n"
                      "sys_interval 1\n")  # fmt: skip
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"Mosquitto did not start: {process.stderr.read().decode() if process.stderr else ''}")


SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def sasl_ssl_kafka(workdir: Path, pki: Pki, users: dict[str, str]) -> tuple[EmbeddedKafka, str]:
    """A second, real Kafka broker like a customer's: a SASL_SSL listener (the PKI's server certificate; SASL PLAIN
    and SCRAM-SHA-256/512 for `users`), beside the SCRAM one of every embedded broker, which a test reads back
    through with the broker's own login (`kafka.access`). Returns it, unstarted, and the SASL_SSL bootstrap."""
    host, port, controller, secure = "127.0.0.1", free_port(), free_port(), free_port()
    keystore = workdir / "broker-keystore.pem"  # Kafka's PEM keystore: the PKCS#8 key, then the certificate chain
    keystore.write_bytes(pki.server_key.read_bytes() + pki.server_cert.read_bytes())
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    listener = "listener.name.sasl_ssl"
    properties = {
        "listeners": f"SASL_PLAINTEXT://{host}:{port},SASL_SSL://{host}:{secure},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"SASL_PLAINTEXT://{host}:{port},SASL_SSL://{host}:{secure}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        f"{listener}.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"{listener}.ssl.keystore.type": "PEM",
        f"{listener}.ssl.keystore.location": str(keystore),
        f"{listener}.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        f"{listener}.scram-sha-256.sasl.jaas.config": SCRAM_LOGIN,
        f"{listener}.scram-sha-512.sasl.jaas.config": SCRAM_LOGIN,
        "auto.create.topics.enable": "true",  # the customer's cluster, not ours: its topics come with its rules
    }  # fmt: skip
    scram = [argument for name, password in users.items() for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
             for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]  # fmt: skip
    kafka = EmbeddedKafka(workdir / "customer-kafka", port=port, controller_port=controller,
                          broker_properties=properties, format_arguments=scram)  # fmt: skip
    return kafka, f"{host}:{secure}"
