"""The simulated network hosts of tests/netns.py: loopback is not shared, each host reaches the root side of its own
link and nothing else, a cut link cuts traffic and a restored one restores it, signals reach a command started in a
host, and nothing is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import netns
from tests.eventually import eventually
from tests.netns import NetHost, NetHostFactory, net_host, net_host_factory, on_host, run_ip
from tests.stack import ServiceProcess

net_hosts = netns.net_hosts

pytestmark = pytest.mark.timeout(60)

SERVER = """
import asyncio, json, os, sys
async def main() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(sys.argv[3].encode() + b"\\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer, sys.argv[1], int(sys.argv[2]))
    print(json.dumps({"port": server.sockets[0].getsockname()[1], "pid": os.getpid()}), flush=True)
    await asyncio.sleep(30)  # a bounded life, whatever happens to the test
asyncio.run(main())
"""
CLIENT = """
import asyncio, json, sys
async def main() -> dict[str, object]:
    try:
        connecting = asyncio.open_connection(sys.argv[1], int(sys.argv[2]))
        reader, writer = await asyncio.wait_for(connecting, float(sys.argv[3]))
        reply = await asyncio.wait_for(reader.readline(), float(sys.argv[3]))
        writer.close()
        return {"reply": reply.decode().strip()}
    except (OSError, TimeoutError) as exc:
        return {"error": type(exc).__name__, "errno": exc.errno}
print(json.dumps(asyncio.run(main())))
"""
TIMEOUT_S = 1.0  # a connection attempt's; the hosts are on one machine, so anything slower is a failure


async def connect(host: NetHost | None, address: str, port: int, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """From inside `host` (None: the root namespace), connect to address:port and read a line: {"reply": line}
    or {"error": exception name, "errno": its errno}."""
    argv = [sys.executable, "-c", CLIENT, address, str(port), str(timeout_s)]
    process = await asyncio.create_subprocess_exec(*(host.argv(argv) if host else argv), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), timeout_s * 2 + 10)
    result: dict[str, Any] = json.loads(out)
    return result


@contextlib.asynccontextmanager
async def root_listener(address: str, reply: str, port: int = 0) -> AsyncIterator[int]:
    """A TCP listener in the root namespace (in this process) that answers `reply`; its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply.encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, address, port)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def host_listener(host: NetHost, address: str, reply: str, port: int = 0) -> AsyncIterator[int]:
    """A TCP listener inside `host` that answers `reply`; its port. Killed when the block exits."""
    process = await asyncio.create_subprocess_exec(
        *host.argv([sys.executable, "-c", SERVER, address, str(port), reply]), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert line, f"the listener in {host.name} on {address}:{port} did not start"
        yield int(json.loads(line)["port"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def netns_inode(pid: int) -> int:
    """Which network namespace process `pid` is in."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def netns_inode_of(host: NetHost) -> int:
    return os.stat(f"/run/netns/{host.name}").st_ino


def running(pid: int) -> bool:
    """Process `pid` exists and has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_loopback_is_not_shared(net_hosts: NetHostFactory) -> None:
    (host,) = await net_hosts(1)
    async with root_listener("127.0.0.1", "root") as port:
        assert await connect(None, "127.0.0.1", port) == {"reply": "root"}
        refused = await connect(host, "127.0.0.1", port)
        assert refused.get("error") == "ConnectionRefusedError", refused


async def test_host_and_root_side_reach_each_other_and_nothing_else(net_hosts: NetHostFactory) -> None:
    host, other = await net_hosts(2)
    assert host.subnet != other.subnet and len({host.address, host.peer_address, other.address}) == 3
    async with root_listener(host.peer_address, "root") as port:
        assert await connect(host, host.peer_address, port) == {"reply": "root"}
    async with host_listener(host, host.address, "host") as port:
        assert await connect(None, host.address, port) == {"reply": "host"}
        # Hosts are not routed to each other (the root namespace forwards nothing): no route, so no packet.
        unrouted = await connect(other, host.address, port)
        assert unrouted.get("errno") == 101, unrouted  # ENETUNREACH
    # The host's only route is its own link's /30: no default route, nowhere else to send anything.
    routes = (await run_ip("-n", host.name, "-4", "route", "show")).splitlines()
    assert [route.split()[:3] for route in routes] == [[host.subnet, "dev", "eth0"]], routes


async def test_hosts_bind_the_same_port_on_their_own_loopback(net_hosts: NetHostFactory) -> None:
    a, b = await net_hosts(2)
    async with (
        root_listener("127.0.0.1", "root") as port,
        host_listener(a, "127.0.0.1", "a", port),
        host_listener(b, "127.0.0.1", "b", port),
    ):
        assert await connect(a, "127.0.0.1", port) == {"reply": "a"}
        assert await connect(b, "127.0.0.1", port) == {"reply": "b"}
        assert await connect(None, "127.0.0.1", port) == {"reply": "root"}


async def test_link_down_cuts_the_host_off_and_link_up_restores_it(net_hosts: NetHostFactory) -> None:
    (host,) = await net_hosts(1)
    async with root_listener(host.peer_address, "root") as port, host_listener(host, host.address, "host") as inside:
        assert await connect(host, host.peer_address, port) == {"reply": "root"}
        await host.link_down()
        cut = await connect(host, host.peer_address, port, timeout_s=0.5)
        assert cut.get("error") == "TimeoutError" or cut.get("errno") == 113, cut  # lost packets, or EHOSTUNREACH
        from_root = await connect(None, host.address, inside, timeout_s=0.5)
        assert from_root.get("errno") == 113, from_root  # the guard route: never out of the default route instead
        await host.link_up()
        await eventually(lambda: reply_from(host, host.peer_address, port), 10, what="the link back up")
        assert await connect(None, host.address, inside) == {"reply": "host"}  # its listener lived on


async def reply_from(host: NetHost | None, address: str, port: int) -> str | None:
    """connect()'s reply, None if it could not connect."""
    reply: str | None = (await connect(host, address, port)).get("reply")
    return reply


async def test_signals_to_the_process_group_reach_the_command_in_a_host(net_hosts: NetHostFactory) -> None:
    (host,) = await net_hosts(1)
    host_netns = netns_inode_of(host)
    assert host_netns != netns_inode(os.getpid())
    sleeper = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"

    async def stopped_by(sig: signal.Signals) -> int | None:
        process = await asyncio.create_subprocess_exec(
            *host.argv([sys.executable, "-c", sleeper]), stdout=asyncio.subprocess.PIPE, start_new_session=True
        )
        try:
            assert process.stdout is not None
            pid = int(await asyncio.wait_for(process.stdout.readline(), 10))
            # `ip netns exec` execs the command: no wrapper process in between, it is the one we started.
            assert pid == process.pid and netns_inode(pid) == host_netns
            os.killpg(process.pid, sig)
            return await asyncio.wait_for(process.wait(), 5)
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    codes = await asyncio.gather(*(stopped_by(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)))
    assert codes == [-signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL]


async def test_streamforge_service_in_a_host(net_hosts: NetHostFactory, tmp_path: Path) -> None:
    (host,) = await net_hosts(1)
    args = ["control-plane", "--data-dir", str(tmp_path / "cp"), "--port", "8080", "--tls", "off"]
    service = on_host(host, ServiceProcess(args, tmp_path / "cp.stderr", "control_plane"),
                      env={"STREAMFORGE_HTTP_HOST": host.address})  # fmt: skip
    event = await service.start()
    try:
        assert service.process is not None and netns_inode(service.process.pid) == netns_inode_of(host)
        assert event["health"] == f"http://{host.address}:8080/health"
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(event["health"])).status_code == 200
        assert await service.interrupt() == 0  # SIGINT to the process group: a clean stop
    finally:
        await service.stop()


async def test_teardown_removes_hosts_and_kills_nothing() -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        async with net_host_factory() as make:
            hosts = await make(2)
            names, subnets = [h.name for h in hosts], [h.subnet for h in hosts]
            inside = await asyncio.create_subprocess_exec(*hosts[0].argv(["sleep", "30"]))
            its_netns = netns_inode_of(hosts[0])
            await eventually(lambda: netns_inode(inside.pid) == its_netns, 5, what="sleep in the host")
            raise RuntimeError("the test failed")
    try:
        namespaces = await run_ip("netns", "list")
        links = await run_ip("-o", "link", "show")
        routes = await run_ip("-4", "route", "show")
        for name in names:
            assert name not in namespaces and f" {name}:" not in links and f" {name}@" not in links
        for subnet in subnets:
            assert subnet not in routes
        # close() kills nothing: the process lives on in its namespace, which has no name and no link now.
        assert running(inside.pid) and netns_inode(inside.pid) == its_netns
    finally:
        inside.kill()
        await inside.wait()


async def test_leftovers_of_dead_processes_are_removed() -> None:
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "")
    await gone.wait()
    stale, live = f"sfn{gone.pid}-0", f"sfn{os.getpid()}-9999"
    for name in (stale, live):
        await run_ip("netns", "add", name)
        await run_ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
    try:
        async with net_host():
            namespaces = (await run_ip("netns", "list")).split()
            links = await run_ip("-o", "link", "show")
            assert stale not in namespaces and f" {stale}@" not in links
            assert live in namespaces and f" {live}@" in links  # its process (this one) is alive
    finally:
        for name in (stale, live):
            await run_ip("link", "del", name, missing_ok=True)
            await run_ip("netns", "del", name, missing_ok=True)
