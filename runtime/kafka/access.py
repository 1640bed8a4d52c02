"""How a client reaches a Kafka cluster: its bootstrap address and the SASL/SCRAM login it must present."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamforge.runtime.files import write_durably

CREDENTIALS_FILE = "client.credentials"  # in the embedded broker's data dir, 0600
SCRAM_MECHANISM = "SCRAM-SHA-256"
GATEWAY_USER = "streamforge-gateway"


class CredentialsError(RuntimeError):
    """A Kafka credentials file that is missing, readable by others, or not what it should hold."""


@dataclass(frozen=True)
class KafkaLogin:
    """A SASL login (SCRAM, or PLAIN on a broker formatted before it had users); the password is in no repr."""

    username: str
    password: str = field(repr=False)
    mechanism: str = SCRAM_MECHANISM

    @classmethod
    def generate(cls, username: str = GATEWAY_USER, mechanism: str = SCRAM_MECHANISM) -> KafkaLogin:
        return cls(username, secrets.token_urlsafe(32), mechanism)

    def write(self, path: Path) -> None:
        """Into `path`, readable by its owner only (written under 0600 from the start, never widened)."""
        document = {"mechanism": self.mechanism, "username": self.username, "password": self.password}
        write_durably(path, json.dumps(document).encode(), mode=0o600)

    @classmethod
    def read(cls, path: Path) -> KafkaLogin:
        try:
            if path.stat().st_mode & 0o077:
                raise CredentialsError(f"{path} is readable by other users: `chmod 600 {path}` (or delete it and "
                                       "restart the embedded broker to make new credentials)")  # fmt: skip
            document = json.loads(path.read_text())
            return cls(str(document["username"]), str(document["password"]), str(document["mechanism"]))
        except FileNotFoundError as exc:
            raise CredentialsError(f"Kafka credentials file {path} does not exist") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise CredentialsError(f"{path} is not a Kafka credentials file (JSON with mechanism, username, "
                                   f"password): {exc!r}") from exc  # fmt: skip


@dataclass(frozen=True)
class KafkaAccess:
    """Everything a client needs to reach a cluster, in one place: every aiokafka client is built from one.

    `credentials_file` is where the login came from: worker processes are given the path, never the password (no
    environment variable or argument another local user could read in /proc).
    """

    bootstrap: str
    credentials_file: Path | None = None
    credentials: KafkaLogin | None = field(default=None, repr=False)

    @classmethod
    def load(cls, bootstrap: str, credentials_file: str | Path | None = None) -> KafkaAccess:
        """`bootstrap`, with the login of `credentials_file` (None: a cluster that asks for none)."""
        if credentials_file is None:
            return cls(bootstrap)
        path = Path(credentials_file)
        return cls(bootstrap, path, KafkaLogin.read(path))

    def client_options(self) -> dict[str, Any]:
        """aiokafka's connection settings: bootstrap servers, security protocol, SASL mechanism and login."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.credentials is not None:
            options |= {
                "security_protocol": "SASL_PLAINTEXT",  # the embedded broker listens on loopback only
                "sasl_mechanism": self.credentials.mechanism,
                "sasl_plain_username": self.credentials.username,
                "sasl_plain_password": self.credentials.password,
            }
        return options

    def cli_arguments(self) -> list[str]:
        """`streamforge run|gateway|up|roundtrip`'s options for this cluster: the login by its file's path only."""
        login = ["--kafka-credentials", str(self.credentials_file)] if self.credentials_file is not None else []
        return ["--bootstrap", self.bootstrap, *login]

    def producer(self, **settings: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.client_options(), **settings)

    def consumer(self, *topics: str, **settings: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.client_options(), **settings)

    def admin(self, **settings: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_options(), **settings)


def ensure_credentials(data_dir: Path, formatted: bool) -> KafkaLogin:
    """The broker's client login kept in `data_dir`, made on first use. A SCRAM user is made when the storage is
    formatted; a broker formatted by a release before logins (`formatted`) cannot be given one, so its new login is
    PLAIN, checked against the broker's 0600 configuration."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        return KafkaLogin.read(path)
    login = KafkaLogin.generate(mechanism="PLAIN" if formatted else SCRAM_MECHANISM)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    login.write(path)
    return login
