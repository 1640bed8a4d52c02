"""Real protocol peers started as processes, for the tests and the benchmarks: Mosquitto."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """A real Mosquitto on `port`. A wide in-flight window (the default 20 would pace a consumer that
    acknowledges per Kafka batch), no cap on queued QoS 1/2 messages (an overload waits in the broker) and
    $SYS figures every second."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise RuntimeError("Mosquitto is missing: `apt-get install mosquitto` (scripts/setup.sh does)")
    config = workdir / f"mosquitto-{port}.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n"
                      "max_queued_messages 0\npersistence false\nsys_interval 1\n")  # fmt: skip
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"Mosquitto did not start: {process.stderr.read().decode() if process.stderr else ''}")
