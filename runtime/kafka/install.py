"""`streamforge kafka install`: resolve the pinned Apache Kafka broker from Maven Central with mvn."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Final

# Newest Apache Kafka whose whole StreamForge suite passes with the pinned aiokafka 0.14.0.
# Kafka 4 removed the oldest protocol versions; aiokafka 0.14 negotiates versions Kafka 4.4 still
# serves (produce with idempotence, classic consumer groups, admin), so no fall-back to 3.9.x is needed.
KAFKA_VERSION: Final = "4.4.0"
SLF4J_VERSION: Final = "2.0.17"
LOG4J_VERSION: Final = "2.25.3"
MIN_JAVA: Final = 17  # Kafka 4 brokers need Java 17
MIN_MAVEN: Final = (3, 6)


class InstallError(RuntimeError):
    """A missing prerequisite or a failed resolution, with what to do about it."""


def cache_dir(override: str | Path | None = None) -> Path:
    """Where jars live: flag, then $STREAMFORGE_CACHE_DIR, then ~/.cache/streamforge."""
    chosen = override or os.environ.get("STREAMFORGE_CACHE_DIR") or Path.home() / ".cache" / "streamforge"
    return Path(chosen).expanduser()


@dataclass(frozen=True)
class KafkaDistribution:
    """An installed broker: its version and the classpath to run it with."""

    version: str
    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    @property
    def marker(self) -> Path:
        return self.home / "installed.json"

    def is_installed(self) -> bool:
        if not self.marker.exists():
            return False
        jars = json.loads(self.marker.read_text())["jars"]
        return all((self.libs / jar).exists() for jar in jars)


def distribution(cache: str | Path | None = None, version: str = KAFKA_VERSION) -> KafkaDistribution:
    return KafkaDistribution(version, cache_dir(cache) / "kafka" / version)


def _version_of(command: list[str], pattern: str, what: str, install_hint: str) -> tuple[int, ...]:
    if shutil.which(command[0]) is None:
        raise InstallError(f"{what} is not on PATH: {install_hint}")
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    match = re.search(pattern, completed.stdout + completed.stderr)
    if match is None:
        raise InstallError(f"could not read the version of {what} from `{' '.join(command)}`: {install_hint}")
    return tuple(int(part) for part in match.groups())


def check_java() -> int:
    """The major version of `java`, or InstallError when missing or older than MIN_JAVA."""
    hint = f"install a Java {MIN_JAVA}+ runtime (Debian: apt-get install openjdk-{MIN_JAVA}-jre-headless)"
    (major,) = _version_of(["java", "-version"], r'version "(?:1\.)?(\d+)', "java", hint)
    if major < MIN_JAVA:
        raise InstallError(f"java {major} is too old for Kafka {KAFKA_VERSION}: {hint}")
    return major


def check_maven() -> tuple[int, ...]:
    hint = "install Apache Maven 3.6+ (Debian: apt-get install maven)"
    version = _version_of(["mvn", "-v"], r"Apache Maven (\d+)\.(\d+)", "mvn", hint)
    if version < MIN_MAVEN:
        raise InstallError(f"mvn {'.'.join(map(str, version))} is too old: {hint}")
    return version


def install(cache: str | Path | None = None, version: str = KAFKA_VERSION, force: bool = False) -> KafkaDistribution:
    """Resolve the broker and its runtime dependencies into the cache. Idempotent; offline once done."""
    dist = distribution(cache, version)
    if dist.is_installed() and not force:
        return dist
    check_java()
    check_maven()
    dist.home.mkdir(parents=True, exist_ok=True)
    template = resources.files("streamforge.runtime.kafka").joinpath("templates/pom.xml").read_text()
    pom = dist.home / "pom.xml"
    pom.write_text(
        Template(template).substitute(kafka_version=version, slf4j_version=SLF4J_VERSION, log4j_version=LOG4J_VERSION)
    )
    staging = dist.home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    completed = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise InstallError(
            f"mvn could not resolve org.apache.kafka:kafka_2.13:{version} "
            f"(exit {completed.returncode}); is Maven Central reachable?\n{completed.stdout[-3000:]}"
        )
    shutil.rmtree(dist.libs, ignore_errors=True)
    staging.rename(dist.libs)
    jars = sorted(p.name for p in dist.libs.glob("*.jar"))
    dist.marker.write_text(json.dumps({"version": version, "jars": jars}, indent=2))
    return dist
