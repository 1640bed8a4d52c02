"""Benchmark: StreamForge and Node-RED side by side, on the same Mosquitto, with the same paced QoS 1 load generator
(bench/loadgen, Go: Python publishers top out near 4-5k msg/s here), at a ladder of offered rates; then a crash round
for each at the ladder's second rate, or its only one (SIGKILL mid-offer, restart, count what the broker accepted and
never came out).

Run: .venv/bin/python bench/bench_nodered.py [--rates 4000,8000,12000,16000,24000] [--seconds 20]

- Ceiling first: loadgen publisher -> Mosquitto -> loadgen counter, nothing between. A figure near it measures the
  harness, not the system.
- Node-RED 4.1.15 (npm, pinned; installed once under ~/.cache/streamforge): mqtt in (QoS 1) -> function (the same
  range check) -> mqtt out (QoS 1), counted by loadgen on the output topic. It persists nothing and acknowledges
  each message on receipt.
- StreamForge (`streamforge run`, embedded Kafka): mqtt -> telemetry.raw -> validator -> telemetry.clean, acks=all,
  PUBACK only after Kafka has the reading; counted in telemetry.clean.
- Per rate: accepted by the broker, delivered, lost (accepted and never delivered after 60 s), end-to-end rate
  (delivered / time from the first offer to the last delivery), behind when the offer ended, peak RSS (StreamForge's
  Python processes, its Kafka JVM apart; Node-RED's node process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import body_reader
from streamforge.runtime.kafka.access import CREDENTIALS_FILE, KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from tests.peers import start_mosquitto

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "streamforge"
NODE_RED = "4.1.15"
DRAIN_LIMIT_S = 60.0
# After a crash round's offer, what has not come out counts as lost only once the output stopped growing for this
# long: under overload the restarted system is still draining its backlog when a fixed wait ends (at 48,000/s offered
# StreamForge had 343,244 of 960,000 out after 60 s, and went on delivering).
CRASH_STALL_S, CRASH_LIMIT_S = 30.0, 900.0


def loadgen() -> Path:
    """The Go load generator, built once per source change."""
    binary = CACHE / "loadgen"
    sources = [HERE / "loadgen" / name for name in ("main.go", "go.mod", "go.sum")]
    if not binary.exists() or binary.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=HERE / "loadgen", check=True)
    return binary


def node_red() -> Path:
    """Node-RED's executable, installed from npm once."""
    home = CACHE / f"node-red-{NODE_RED}"
    executable = home / "node_modules" / ".bin" / "node-red"
    if not executable.exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--omit=dev", f"node-red@{NODE_RED}"],
                       cwd=home, check=True)  # fmt: skip
    return executable


def rss_mb(pids: list[int]) -> float:
    return _summed_mb(pids, "status", "VmRSS:")


def pss_mb(pids: list[int]) -> float:
    """Like RSS, but each shared page split among the processes mapping it: summed RSS counts the libraries that
    a gateway and its workers share once per process."""
    return _summed_mb(pids, "smaps_rollup", "Pss:")


def _summed_mb(pids: list[int], file: str, field: str) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
    return total / 1024


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def is_java(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    return False


class NodeRed:
    def __init__(self, workdir: Path, mqtt_port: int) -> None:
        self.dir, self.port = workdir / "node-red", free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True)
        broker = {
            "id": "broker",
            "type": "mqtt-broker",
            "broker": "127.0.0.1",
            "port": str(mqtt_port),
            "clientid": "nodered-bench",
            "cleansession": False,
            "protocolVersion": "4",
            "keepalive": "60",
        }
        check = (
            "const r = msg.payload; if (typeof r.value !== 'number' || r.value < 0 || r.value > 100) return null;"
            " r.validated = true; msg.topic = 'bench/out/nr/' + msg.topic.split('/').pop(); return msg;"
        )
        flows = [broker,
                 {"id": "tab", "type": "tab", "label": "bench"},
                 {"id": "in", "type": "mqtt in", "z": "tab", "topic": "bench/in/#", "qos": "1", "datatype": "json",
                  "broker": "broker", "wires": [["fn"]]},
                 {"id": "fn", "type": "function", "z": "tab", "func": check, "outputs": 1, "wires": [["out"]]},
                 {"id": "out", "type": "mqtt out", "z": "tab", "qos": "1", "retain": "false", "broker": "broker",
                  "wires": []}]  # fmt: skip
        (self.dir / "flows.json").write_text(json.dumps(flows))

    def start(self) -> None:
        log = self.dir / "node-red.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:  # a file, not a pipe: nobody reads Node-RED's log while it runs
            self.process = subprocess.Popen([str(node_red()), "-u", str(self.dir), "-p", str(self.port), "flows.json"],
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "Connected to broker" in log.read_text()[offset:]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"Node-RED did not connect to the broker within 60 s: {log.read_text()[-1500:]}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def processes(self) -> dict[str, list[int]]:
        return {"node": descendants(self.process.pid)} if self.process else {}


class Counter:
    """loadgen's counter on a topic filter, running across rounds: the distinct sequence numbers seen so far."""

    def __init__(self, binary: Path, port: int, topic: str) -> None:
        self.args = [str(binary), "sub", "-broker", f"tcp://127.0.0.1:{port}", "-topic", topic, "-idle", "1000h",
                     "-limit", "1000h"]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None
        self.distinct = 0

    def __enter__(self) -> Counter:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None and self.process.stdout is not None
        self.process.stderr.readline()  # "subscribed"
        lines = self.process.stdout

        def follow() -> None:
            for line in lines:
                self.distinct = int(json.loads(line)["distinct"])

        threading.Thread(target=follow, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


def side_by_side_flow(mqtt_port: int) -> dict[str, Any]:
    """StreamForge's half of the comparison: mqtt -> telemetry.raw -> validator (the same range check)."""
    subscription = {
        "topic": "bench/in/#",
        "points": [
            {"asset_id": "{2}", "parameter": "pressure", "value": "/value", "device_time": "/ts", "unit": "bar"}
        ],
    }
    return {"format": "streamforge.flow/v1", "id": "bench", "label": "side by side", "version": 1,
            "nodes": [{"id": "mq", "type": "mqtt", "config": {"host": "127.0.0.1", "port": mqtt_port,
                                                              "client_id": "streamforge-bench",
                                                              "subscriptions": [subscription]}},
                      {"id": "val", "type": "validator", "config": {"rules": [
                          {"parameter": "pressure", "min": 0, "max": 100}]}}],
            "edges": [{"from": "mq:out", "to": "val:in"}]}  # fmt: skip


class StreamForge:
    """`streamforge run` of one flow on its embedded Kafka, as a user starts it."""

    def __init__(self, workdir: Path, flow: dict[str, Any]) -> None:
        self.dir, self.port = workdir / "streamforge", free_port()
        self.process: subprocess.Popen[str] | None = None
        self.dir.mkdir(parents=True)
        (self.dir / "flow.json").write_text(json.dumps(flow))
        self.kafka: KafkaAccess | None = None  # its embedded broker, once it runs

    def start(self) -> None:
        self.process = process = subprocess.Popen(
            [sys.executable, "-m", "streamforge.runtime.cli", "run", str(self.dir / "flow.json"), "--data-dir",
             str(self.dir / "data"), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=(self.dir / "stderr.log").open("ab"), text=True, start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{") and json.loads(line).get("event") == "running":
                bootstrap = json.loads(line)["kafka"]
                self.kafka = KafkaAccess.load(bootstrap, self.dir / "data" / "kafka" / CREDENTIALS_FILE)
                threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()  # drain
                time.sleep(2)  # the mqtt worker's subscription
                return
        raise RuntimeError(f"streamforge run exited: {(self.dir / 'stderr.log').read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the gateway, its workers and the broker at once (no clean shutdown), and wait until all are gone:
        workers and the broker run in sessions of their own, out of the gateway's process group, and one still
        dying wrote into the data directory as it was removed."""
        assert self.process is not None
        everyone = descendants(self.process.pid)
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in everyone[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)

    def processes(self) -> dict[str, list[int]]:
        if self.process is None:
            return {}
        pids = descendants(self.process.pid)
        return {"python": [p for p in pids if not is_java(p)], "kafka_jvm": [p for p in pids if is_java(p)]}

    @contextlib.contextmanager
    def clean_counter(self) -> Iterator[Callable[[], int]]:
        """Records in telemetry.clean (its end offsets; the first look is waited for), kept current by one client in a
        thread of its own, as loadgen's counter counts Node-RED's output: a new client per look cost the machine CPU
        while it measured, and made StreamForge's end time coarser than Node-RED's."""
        count, stop, looked = [0], threading.Event(), threading.Event()

        async def follow() -> None:
            assert self.kafka is not None
            consumer = self.kafka.consumer()
            await consumer.start()
            try:
                partitions = [TopicPartition("telemetry.clean", p) for p in range(12)]
                while not stop.is_set():
                    count[0] = sum((await consumer.end_offsets(partitions)).values())
                    looked.set()
                    await asyncio.sleep(0.1)
            finally:
                await consumer.stop()

        def latest() -> int:
            if not looked.wait(30):
                raise RuntimeError(f"telemetry.clean's end offsets could not be read from {self.kafka} in 30 s")
            return count[0]

        thread = threading.Thread(target=asyncio.run, args=(follow(),), daemon=True)
        thread.start()
        try:
            yield latest
        finally:
            stop.set()
            thread.join()

    async def distinct(self) -> int:
        """Distinct readings in telemetry.clean (a redelivery after a crash may repeat some), told apart by asset and
        device time: loadgen's timestamps are unique per sequence number and asset below 100,000 msg/s. (Not by the
        whole body: a redelivered reading has a new gateway time, and counted twice it could hide one lost.)"""
        assert self.kafka is not None
        consumer = self.kafka.consumer("telemetry.clean", auto_offset_reset="earliest",
                                       enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        read = body_reader(SCHEMAS["telemetry"])
        seen: set[tuple[str, Any]] = set()
        try:
            while batch := await consumer.getmany(timeout_ms=3000, max_records=20000):
                for records in batch.values():
                    for message in records:
                        reading = read(message.value, 5)  # the Avro body, after the wire format's 5-byte header
                        seen.add((reading["asset_id"], reading["timestamps"]["device_time"]))
        finally:
            await consumer.stop()
        return len(seen)


def offer(binary: Path, port: int, rate: int, seconds: float, start: int) -> dict[str, Any]:
    done = subprocess.run([str(binary), "pub", "-broker", f"tcp://127.0.0.1:{port}", "-rate", str(rate),
                           "-duration", f"{seconds}s", "-start", str(start)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return dict(json.loads(done.stdout))


Pids = Callable[[], dict[str, list[int]]]  # label -> the pids of a system's processes


@contextlib.contextmanager
def sampling(processes: Pids) -> Iterator[dict[str, float]]:
    """Peak RSS (MB) per label while the block runs."""
    peak: dict[str, float] = {}
    stop = False

    def sample() -> None:
        while not stop:
            for label, pids in processes().items():
                peak[label] = max(peak.get(label, 0.0), rss_mb(pids))
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop = True
        thread.join()


def ladder(name: str, binary: Path, port: int, rates: list[int], seconds: float, delivered: Callable[[], int],
           processes: Pids) -> list[dict[str, Any]]:  # fmt: skip
    rounds, start = [], 0
    base = delivered()
    for rate in rates:
        with sampling(processes) as peak:
            began = time.monotonic()
            sent = offer(binary, port, rate, seconds, start)
            at_end = delivered() - base
            last_change, previous = time.monotonic(), at_end
            while time.monotonic() - last_change < 10 and time.monotonic() - began < seconds + DRAIN_LIMIT_S:
                time.sleep(0.5)
                now = delivered() - base
                if now >= sent["acked"]:
                    previous, last_change = now, time.monotonic()
                    break
                if now != previous:
                    previous, last_change = now, time.monotonic()
            got = previous
        elapsed = last_change - began
        rounds.append({"offered_per_s": rate, "accepted": sent["acked"], "delivered": got,
                       "lost": max(0, sent["acked"] - got), "end_to_end_per_s": got / elapsed if elapsed else 0,
                       "behind_at_offer_end": max(0, sent["acked"] - at_end), "peak_rss_mb": dict(peak)})  # fmt: skip
        print(f"  {name:<11} {rate:>6,}/s offered: {got:>9,} of {sent['acked']:>9,} delivered "
              f"({rounds[-1]['end_to_end_per_s']:>8,.0f}/s end to end, {rounds[-1]['behind_at_offer_end']:>8,} behind "
              f"at the end of the offer, {rounds[-1]['lost']:,} lost); peak RSS "
              + ", ".join(f"{k} {v:.0f} MB" for k, v in peak.items()), flush=True)  # fmt: skip
        base += got
        start += sent["sent"]
    return rounds


def crash_round(name: str, binary: Path, port: int, kill: Callable[[], None], start: Callable[[], None],
                rate: int, seconds: float, distinct: Callable[[], int]) -> dict[str, Any]:  # fmt: skip
    """Offer `rate` for `seconds`; SIGKILL the system halfway, restart it at once; count what never came out (what
    had not when its output stopped growing for CRASH_STALL_S)."""
    before = distinct()
    failed: list[Exception] = []

    def kill_and_restart() -> None:
        time.sleep(seconds / 2)
        kill()
        try:
            start()
        except Exception as exc:  # raised below, in the round, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=kill_and_restart)
    thread.start()
    sent = offer(binary, port, rate, seconds, 10_000_000)
    thread.join()
    if failed:
        raise RuntimeError(f"{name} did not start again after the SIGKILL: {failed[0]}") from failed[0]
    deadline, got, grew = time.monotonic() + CRASH_LIMIT_S, 0, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - grew < CRASH_STALL_S:
        out = distinct() - before
        if out > got:
            got, grew = out, time.monotonic()
        if got >= sent["acked"]:
            break
        time.sleep(2)
    lost = max(0, sent["acked"] - got)
    print(
        f"  {name:<11} crash round at {rate:,}/s: SIGKILL after {seconds / 2:g} s, restarted; {sent['acked']:,} "
        f"accepted by the broker, {got:,} came out, {lost:,} lost",
        flush=True,
    )
    return {"offered_per_s": rate, "accepted": sent["acked"], "delivered": got, "lost": lost}


def ceiling(binary: Path, port: int, rate: int, seconds: float) -> dict[str, Any]:
    """The harness alone: loadgen -> Mosquitto -> loadgen's counter."""
    with Counter(binary, port, "bench/in/#") as counter:
        began = time.monotonic()
        sent = offer(binary, port, rate, seconds, 50_000_000)
        while counter.distinct < sent["acked"] and time.monotonic() - began < seconds + 30:
            time.sleep(0.2)
        elapsed = time.monotonic() - began
    return {"offered_per_s": rate, "accepted": sent["acked"], "counted": counter.distinct,
            "per_s": counter.distinct / elapsed}  # fmt: skip


def main(rates: list[int], seconds: float) -> dict[str, Any]:
    binary, workdir, port = loadgen(), Path(tempfile.mkdtemp(prefix="sf-bench-nodered-")), free_port()
    mosquitto = start_mosquitto(workdir, port)
    results: dict[str, Any] = {"node_red_version": NODE_RED, "seconds_per_rate": seconds}
    try:
        time.sleep(0.5)
        top = max(rates) * 2
        crash_rate = rates[min(1, len(rates) - 1)]
        results["ceiling"] = roof = ceiling(binary, port, top, min(seconds, 10))
        print(f"harness ceiling (loadgen -> Mosquitto -> counter): {roof['per_s']:,.0f} msg/s of {top:,} offered, "
              f"{roof['accepted'] - roof['counted']:,} lost", flush=True)  # fmt: skip

        nodered = NodeRed(workdir, port)
        nodered.start()
        with Counter(binary, port, "bench/out/nr/#") as counted:
            results["node_red"] = ladder("Node-RED", binary, port, rates, seconds, lambda: counted.distinct,
                                         nodered.processes)  # fmt: skip
            results["node_red_crash"] = crash_round("Node-RED", binary, port, nodered.kill, nodered.start,
                                                    crash_rate, seconds, lambda: counted.distinct)  # fmt: skip
        nodered.kill()

        streamforge = StreamForge(workdir, side_by_side_flow(port))
        streamforge.start()

        with streamforge.clean_counter() as count:
            results["streamforge"] = ladder("StreamForge", binary, port, rates, seconds, count, streamforge.processes)

        def distinct() -> int:
            return asyncio.run(streamforge.distinct())

        results["streamforge_crash"] = crash_round("StreamForge", binary, port, streamforge.kill, streamforge.start,
                                                   crash_rate, seconds, distinct)  # fmt: skip
        streamforge.kill()
    finally:
        mosquitto.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="4000,8000,12000,16000,24000", help="offered msg/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each rate is offered")
    arguments = parser.parse_args()
    outcome = main([int(r) for r in arguments.rates.split(",")], arguments.seconds)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "nodered.json").write_text(json.dumps(outcome, indent=2))
