"""One single-node KRaft broker: its configuration, first-boot formatting, launch and readiness probe."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streamforge.runtime.files import private_dir, write_durably
from streamforge.runtime.kafka.access import (
    CREDENTIALS_FILE,
    KafkaAccess,
    KafkaLogin,
    ensure_credentials,
)
from streamforge.runtime.kafka.install import KafkaDistribution, check_java

log = logging.getLogger("streamforge.kafka")

HEALTH_TOPIC = "_streamforge.health"
STATE_FILE = "broker.json"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
CLEANER_DEDUPE_BUFFER_BYTES = 16 * 1024 * 1024  # the log cleaner's key map, on the broker's heap (see _properties)
LOCK_FILE = ".lock"  # Kafka's own lock on each log directory (a POSIX record lock, FileChannel.tryLock)
_FLOCK = "hhqqi4x"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (padded to 32 bytes)


def _jaas(login: KafkaLogin, mechanism: str) -> str:
    """A listener's login module for `mechanism`, with the broker's own login (for its connections to itself); for
    PLAIN also the one user it accepts (SCRAM users live in the cluster's metadata)."""
    own = f'username="{login.username}" password="{login.password}"'
    if mechanism == "PLAIN":
        return f'{PLAIN_MODULE} required {own} user_{login.username}="{login.password}";'
    return f"{SCRAM_MODULE} required {own};"


class BrokerConflict(RuntimeError):
    """Another process holds this broker's data directory or port; nothing was started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def default_data_dir() -> Path:
    home = os.environ.get("STREAMFORGE_HOME") or Path.home() / ".local" / "share" / "streamforge"
    return Path(home).expanduser() / "kafka"


@dataclass
class BrokerSettings:
    """What a broker needs to boot; persisted beside its data so a restart reuses the same ports."""

    host: str = "127.0.0.1"
    port: int = 0
    controller_port: int = 0
    cluster_id: str = ""
    heap: str = "1g"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class Broker:
    """A broker process rooted at `data_dir`: <data_dir>/log holds Kafka's data, broker.json its settings."""

    def __init__(
        self, dist: KafkaDistribution, data_dir: str | Path | None = None,
        extra_properties: Mapping[str, str] | None = None, format_arguments: Sequence[str] = (),
    ) -> None:  # fmt: skip
        """`extra_properties` override or add broker properties (e.g. a TLS listener); `format_arguments` go to the
        first format of the storage (e.g. `--add-scram` users)."""
        self.dist = dist
        self.extra_properties = dict(extra_properties or {})
        self.format_arguments = list(format_arguments)
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        self.log_dir = self.data_dir / "log"
        self.state_path = self.data_dir / STATE_FILE
        self.pid_path = self.data_dir / "kafka.pid"
        self.credentials_path = self.data_dir / CREDENTIALS_FILE

    def access(self, settings: BrokerSettings) -> KafkaAccess:
        """How this broker's clients reach it: its bootstrap and the login in its 0600 credentials file."""
        return KafkaAccess.load(settings.bootstrap, self.credentials_path)

    def load_settings(self) -> BrokerSettings | None:
        if not self.state_path.exists():
            return None
        return BrokerSettings(**json.loads(self.state_path.read_text())["settings"])

    def prepare(self, port: int | None = None, controller_port: int | None = None) -> BrokerSettings:
        """Write configs; format storage on first boot only. Explicit ports override remembered ones; a
        remembered port that another process has taken since is replaced by a free one (call after
        stop_stray: no broker of this data directory holds it then)."""
        check_java()
        if not self.dist.is_installed():
            raise RuntimeError(
                f"Kafka {self.dist.version} is not installed in {self.dist.home}: run `streamforge kafka install`"
            )
        private_dir(self.data_dir)  # 0700: the broker's settings, login and logs are this user's alone
        private_dir(self.log_dir)
        formatted = (self.log_dir / "meta.properties").exists()
        credentials = ensure_credentials(self.data_dir, formatted)
        settings = self.load_settings() or BrokerSettings(cluster_id=uuid.uuid4().hex[:22])
        remembered = [p for p in (settings.port, settings.controller_port) if p and port_open(settings.host, p)]
        if remembered:
            log.warning("remembered broker ports are taken by another process; picking new ones",
                        extra={"ports": remembered, "data_dir": str(self.data_dir)})  # fmt: skip
        settings.port = port or (settings.port if settings.port not in remembered else 0) or free_port(settings.host)
        settings.controller_port = (controller_port or (settings.controller_port if settings.controller_port
                                    not in remembered else 0) or free_port(settings.host))  # fmt: skip
        # 0600: it holds the controller listener's login (the same secret as the clients' SCRAM one).
        write_durably(self.data_dir / "server.properties", self._properties(settings, credentials).encode(), mode=0o600)
        log4j = resources.files("streamforge.runtime.kafka").joinpath("templates/log4j2.xml").read_text()
        (self.data_dir / "log4j2.xml").write_text(log4j)
        if not formatted:
            self._format(settings, credentials)
        self._save({"settings": asdict(settings), "version": self.dist.version})
        return settings

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path)

    def _properties(self, s: BrokerSettings, login: KafkaLogin) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.controller_port}",
            # Clients must log in (SCRAM; the login is in the 0600 credentials file beside the data): a local process
            # without it can neither forge an alarm nor read a changelog.
            "listeners": f"SASL_PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://{s.host}:{s.port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": login.mechanism,
            "sasl.mechanism.inter.broker.protocol": login.mechanism,
            f"listener.name.sasl_plaintext.{login.mechanism.lower()}.sasl.jaas.config": _jaas(login, login.mechanism),
            # The controller listener takes admin requests too (KIP-919: configs, ACLs): it wants a login as well.
            # PLAIN, as KRaft controllers cannot read SCRAM users (they live in the metadata the quorum serves).
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": _jaas(login, "PLAIN"),
            "log.dirs": str(self.log_dir),
            "num.partitions": "12",
            # One node: every replicated internal topic has exactly one replica.
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Durability: never elect a replica that may have lost acknowledged writes.
            "unclean.leader.election.enable": "false",
            # Topics are created deliberately (catalogue + flows); a typo must not create one.
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "60000",
            # Retention and the disk budget's evictions free whole segments: keep them small enough to matter on a
            # gateway's disk (Kafka's default is 1 GiB per partition, or a week).
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.roll.ms": str(3_600_000),
            # The log cleaner's key map for compacted topics (node state, consumer offsets) lives on the heap:
            # Kafka's default 128 MiB took half of the 256 MiB heap for good, so G1 ran a marking cycle every few
            # seconds and young pauses came every ~1.5 s under load. 16 MiB maps ~700,000 keys per cleaning pass,
            # far more than a gateway's changelogs hold (a key per series and window).
            "log.cleaner.dedupe.buffer.size": str(CLEANER_DEDUPE_BUFFER_BYTES),
            **self.extra_properties,
        }
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def _format(self, s: BrokerSettings, credentials: KafkaLogin) -> None:
        """Format the storage with the clients' SCRAM user in its first metadata: it exists before any client.
        The tool's arguments go in a 0600 argument file (java @file), so the password is on no command line."""
        user = f"{credentials.mechanism}=[name={credentials.username},password={credentials.password}]"
        arguments = ["kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", s.cluster_id, "-c",
                     str(self.data_dir / "server.properties"), "--add-scram", user, *self.format_arguments]  # fmt: skip
        argument_file = self.data_dir / ".format.args"
        write_durably(argument_file, "".join(f'"{argument}"\n' for argument in arguments).encode(), mode=0o600)
        try:
            completed = subprocess.run(
                [*self._java(), f"@{argument_file}"], capture_output=True, text=True, check=False
            )
        finally:
            argument_file.unlink(missing_ok=True)
        if completed.returncode != 0:
            said = (completed.stdout + completed.stderr).strip()[-2000:]
            raise RuntimeError(f"formatting Kafka storage in {self.log_dir} failed:\n{said}")

    def _java(self, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            f"-Dstreamforge.log.dir={self.data_dir}",
            "-cp",
            self.dist.classpath,
        ]

    def command(self, settings: BrokerSettings) -> list[str]:
        return [*self._java(settings.heap), "kafka.Kafka", str(self.data_dir / "server.properties")]

    # -- who runs on this data directory -------------------------------------------------------------

    def lock_holder(self) -> int | None:
        """The pid of the process holding Kafka's lock on the log directory, or None when nobody holds it."""
        try:
            fd = os.open(self.log_dir / LOCK_FILE, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            # F_GETLK only asks: it never takes the lock, so it cannot release one this process holds.
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        finally:
            os.close(fd)
        kind, _whence, _start, _length, pid = struct.unpack(_FLOCK, answer)
        return None if kind == fcntl.F_UNLCK else pid

    def is_broker_process(self, pid: int) -> bool:
        """True if `pid` is a Kafka broker started on this data directory's configuration."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in argv and str(self.data_dir / "server.properties").encode() in argv

    def stop_stray(self, timeout_s: float = 30.0) -> int | None:
        """Before a start: stop a broker still running on this data directory (a SIGKILLed gateway's, or a
        detached one), SIGTERM first so it shuts down cleanly. Two brokers on one log directory corrupt it.

        Returns the stopped pid. BrokerConflict if the lock is held by something that is not our broker.
        """
        pid = self.lock_holder()
        if pid is not None and (pid <= 0 or not self.is_broker_process(pid)):
            raise BrokerConflict(
                f"{self.log_dir / LOCK_FILE} is locked by process {pid}, which is not a broker on this data "
                "directory: stop that process, or give the gateway another data directory"
            )
        # The lock holder, and any other: one that freed the lock a moment before its JVM is gone, or not locked yet.
        strays = self.broker_processes()
        for stray in strays:
            self._stop(stray, timeout_s)
        while pid is not None and self.lock_holder() == pid:  # the process goes a moment before its lock does
            time.sleep(0.05)
        return pid if pid is not None else next(iter(strays), None)

    def broker_processes(self) -> list[int]:
        """Every live broker process started on this data directory's configuration."""
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and self.is_broker_process(int(entry))]

    def _stop(self, pid: int, timeout_s: float) -> None:
        """Until broker `pid` is gone: SIGTERM, then SIGKILL after `timeout_s`."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.is_broker_process(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def check_ports_free(self, settings: BrokerSettings) -> None:
        """Nobody may answer on our ports before we start: a client would be talking to someone else."""
        taken = [port for port in (settings.port, settings.controller_port) if port_open(settings.host, port)]
        if taken:
            raise BrokerConflict(
                f"port(s) {taken} on {settings.host}, remembered for the broker of {self.data_dir}, are in use by "
                f"another process: free them, or remove the ports from {self.state_path} to pick new ones"
            )

    async def check_ours(self, pid: int, settings: BrokerSettings) -> None:
        """After readiness: the broker answering is the process we started, on this data directory's cluster."""
        holder = self.lock_holder()
        if holder != pid:
            raise BrokerConflict(f"the lock on {self.log_dir} is held by pid {holder}, not by our broker (pid {pid})")
        admin = self.access(settings).admin(request_timeout_ms=10_000)
        try:
            await admin.start()
            cluster_id = (await admin.describe_cluster()).get("cluster_id")
        finally:
            await admin.close()
        if cluster_id != settings.cluster_id:
            raise BrokerConflict(
                f"{settings.bootstrap} answers as cluster {cluster_id!r}, not this data directory's "
                f"{settings.cluster_id!r}: another broker owns the port"
            )

    # -- detached use, for `streamforge kafka start|stop|status` -------------------------------------

    def running_pid(self) -> int | None:
        """The broker running on this data directory, whoever started it (the lock tells), else the pid file's."""
        holder = self.lock_holder()
        if holder is not None and holder > 0:
            return holder
        try:
            pid = int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self.is_broker_process(pid) else None

    def start_detached(self, settings: BrokerSettings) -> int:
        stderr = (self.data_dir / "broker.stderr").open("ab")
        process = subprocess.Popen(
            self.command(settings), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        self.pid_path.write_text(str(process.pid))
        return process.pid

    def stop_detached(self, timeout_s: float = 30.0) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        return True


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie that has exited counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


async def accepts_produce(kafka: KafkaAccess, timeout_s: float = 10.0) -> bool:
    """True once the broker accepts an acks=all produce request (creating the health topic if needed)."""
    admin = kafka.admin(request_timeout_ms=int(timeout_s * 1000))
    producer = kafka.producer(acks="all", request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(HEALTH_TOPIC, 1, 1, topic_configs={"retention.ms": "3600000"})])
        await asyncio.wait_for(producer.start(), timeout_s)
        await asyncio.wait_for(producer.send_and_wait(HEALTH_TOPIC, b"ping"), timeout_s)
        return True
    except (KafkaError, TimeoutError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await admin.close()


async def wait_ready(kafka: KafkaAccess, timeout_s: float, alive: Any = None) -> None:
    """Wait until the broker accepts produce requests; `alive()` False aborts early (process died)."""
    bootstrap = kafka.bootstrap
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"Kafka at {bootstrap} exited during start-up; see broker.log in its data dir")
        if port_open(host, int(port)) and await accepts_produce(kafka, timeout_s=5.0):
            return
        await asyncio.sleep(0.3)
    raise TimeoutError(f"Kafka at {bootstrap} did not accept produce requests within {timeout_s:.0f}s")
