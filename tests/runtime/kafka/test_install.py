"""`kafka install`: idempotent, works offline once installed, clear errors for missing or old tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamforge.runtime.kafka.install import InstallError, check_java, distribution, install

CLI = [sys.executable, "-m", "streamforge.runtime.cli"]


def test_installed_distribution_is_complete() -> None:
    dist = install()  # the session already installed it: this must be a no-op
    assert dist.is_installed()
    jars = {p.name for p in dist.libs.glob("*.jar")}
    assert f"kafka_2.13-{dist.version}.jar" in jars
    assert any(j.startswith("log4j-core-") for j in jars) and any(j.startswith("slf4j-api-2.") for j in jars)


def _path_without(tmp_path: Path, *hidden: str, fake_java_version: str | None = None) -> str:
    """A PATH with the real tools symlinked except `hidden` (and optionally a java reporting a version)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mvn", "java", "python3", "sh", "bash", "env"):
        real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if real and tool not in hidden:
            (bin_dir / tool).symlink_to(real)
    if fake_java_version is not None:
        java = bin_dir / "java"
        java.unlink(missing_ok=True)
        java.write_text(f"#!/bin/sh\necho 'openjdk version \"{fake_java_version}\" 2019-01-15' >&2\n")
        java.chmod(0o755)
    return str(bin_dir)


def test_install_works_offline_without_mvn_once_installed(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, "mvn")}
    done = subprocess.run([*CLI, "kafka", "install"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert distribution().version in done.stdout


def test_missing_mvn_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, "mvn")}
    done = subprocess.run(
        [*CLI, "kafka", "install", "--cache-dir", str(tmp_path / "empty-cache")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "mvn is not on PATH" in done.stderr and "apt-get install maven" in done.stderr


def test_old_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, fake_java_version="11.0.2"))
    with pytest.raises(InstallError, match=r"java 11 is too old for Kafka .* install a Java 17\+ runtime"):
        check_java()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, "java"))
    with pytest.raises(InstallError, match="java is not on PATH"):
        check_java()
