"""Simulated network hosts for tests: Linux network namespaces, each joined to the root namespace by a veth pair, so
a test never trusts that loopback is shared between StreamForge's processes.

Each host has its own loopback and one link, `eth0`, with the host's `address` on it; the other end of that link,
in the root namespace (where the test and the control plane run), has the host's `peer_address`. Each pair is a /30
of 10.213.0.0/16. A host has no default route and the root namespace forwards nothing, so a host only ever talks to
its own loopback and to the root side of its link. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`;
without them the `net_hosts` fixture fails the test with the reason: it never skips."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import itertools
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import pytest

from tests.stack import ServiceProcess

NETWORK = ipaddress.IPv4Network("10.213.0.0/16")  # one /30 per host: root side .1, host side .2 of it
PREFIX = "sfn"  # namespace and root-side veth are both named sfn<pid>-<counter>
HOST_LINK = "eth0"  # the host's end of its veth, inside its namespace
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
_LOCK = b"\0streamforge-netns-allocation"  # an abstract unix socket: one per root network namespace, freed on exit
_GUARD_METRIC = "4000"  # the host's /30 as `unreachable` behind its link's own route (metric 0), see NetHost.link_down
_IP_TIMEOUT_S = 10.0
_IPV6 = os.path.exists("/proc/net/if_inet6")  # the kernel has IPv6: links then get no link-local addresses either
_counter = itertools.count()

Service = TypeVar("Service", bound=ServiceProcess)


class NetHostError(RuntimeError):
    """A simulated host could not be made or removed; the message says why (the `ip` command and its stderr)."""


def ip_command() -> str:
    """The path of iproute2's `ip`, or NetHostError."""
    found = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if found is None:
        raise NetHostError("iproute2's `ip` is not installed (apt-get install iproute2)")
    return found


async def run_ip(*args: str, missing_ok: bool = False) -> str:
    """Run `ip ARGS` in the root namespace; its stdout, or NetHostError with its stderr. `missing_ok`: an object
    that is already gone is no error."""
    process = await asyncio.create_subprocess_exec(
        ip_command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), _IP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise NetHostError(f"`ip {' '.join(args)}` did not finish within {_IP_TIMEOUT_S} s") from None
    if process.returncode != 0:
        message = err.decode().strip()
        gone = ("Cannot find device", "No such file or directory", "No such process", "does not exist")
        if missing_ok and any(text in message for text in gone):
            return ""
        hint = ""
        if os.geteuid() != 0 or "Operation not permitted" in message:
            hint = f" (running as uid {os.geteuid()}: simulated hosts need root, CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        raise NetHostError(f"`ip {' '.join(args)}` failed: {message}{hint}")
    return out.decode()


@contextlib.asynccontextmanager
async def _allocation_lock(timeout_s: float = 30.0) -> AsyncIterator[None]:
    """Held while hosts' names and subnets are looked at and taken, by this and every other process that shares the
    root network namespace (an abstract socket name is per network namespace, and is freed when its holder dies)."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                lock.bind(_LOCK)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                if time.monotonic() >= deadline:
                    raise NetHostError(f"another process held the netns allocation lock for {timeout_s} s") from None
                await asyncio.sleep(0.01)
        yield
    finally:
        lock.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    """One of ours whose process is gone."""
    match = _NAME.match(name)
    return match is not None and not _pid_alive(int(match.group(1)))


async def _remove_stale() -> None:
    """Namespaces, veths and guard routes left by test processes that died before their teardown."""
    namespaces = [line.split()[0] for line in (await run_ip("netns", "list")).splitlines() if line.strip()]
    links = [line.split(":")[1].strip().split("@")[0] for line in (await run_ip("-o", "link", "show")).splitlines()]
    for link in filter(_stale, links):
        await run_ip("link", "del", link, missing_ok=True)
    for namespace in filter(_stale, namespaces):
        await run_ip("netns", "del", namespace, missing_ok=True)
    used = await _used_subnets(routes=False)
    for line in (await run_ip("-4", "route", "show", "root", str(NETWORK), "type", "unreachable")).splitlines():
        subnet = _destination(line)
        if subnet not in used:  # its host's link is gone
            await run_ip("route", "del", "unreachable", str(subnet), "metric", _GUARD_METRIC, missing_ok=True)


async def _used_subnets(routes: bool = True) -> set[ipaddress.IPv4Network]:
    """The /30s of NETWORK that an address in the root namespace (or, with `routes`, a route) is in."""
    used = set()
    for line in (await run_ip("-4", "-o", "addr", "show")).splitlines():
        address = ipaddress.IPv4Interface(line.split()[3]).ip
        if address in NETWORK:
            used.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
    if routes:
        for line in (await run_ip("-4", "route", "show", "root", str(NETWORK))).splitlines():
            network = _destination(line)
            used.update(network.subnets(new_prefix=30) if network.prefixlen < 30 else [network.supernet(30)])
    return used


def _destination(route: str) -> ipaddress.IPv4Network:
    """The destination of a line of `ip route show` (`10.213.0.0/30 dev ...`, `unreachable 10.213.0.4/30 ...`)."""
    words = route.split()
    return ipaddress.IPv4Network(words[1] if words[0] in ("unreachable", "blackhole", "prohibit") else words[0])


async def _remove(name: str, subnet: str) -> None:
    """Delete host `name`'s veth pair (both ends go together), the guard route of its `subnet` and its namespace's
    name: every step, even when one fails; NetHostError with every failure. What is already gone is no failure."""
    failures = []
    for step in (("link", "del", name), ("route", "del", "unreachable", subnet, "metric", _GUARD_METRIC),
                 ("netns", "del", name)):  # fmt: skip
        try:
            await run_ip(*step, missing_ok=True)
        except NetHostError as exc:
            failures.append(str(exc))
    if failures:
        raise NetHostError("; ".join(failures))


@dataclass
class NetHost:
    """One simulated host: a network namespace `name` whose `eth0` has `address`; the root side of its link is
    the root-side veth `veth` (named like the namespace) with `peer_address`. Make with net_host() or net_hosts."""

    name: str
    address: str  # the host's own IP, on its eth0
    peer_address: str  # the root side's IP: how the host reaches the root namespace (the control plane, Kafka, ...)
    subnet: str  # the /30 of both

    @property
    def veth(self) -> str:
        """The root-side end of the host's link (link_down/link_up act on it)."""
        return self.name

    def argv(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """`args` to run inside the host: `ip netns exec NAME [env K=V ...] ARGS`. Both exec: the process that
        starts is the command itself (same pid), so signals to it or its process group reach the command."""
        extra = ["env", *(f"{key}={value}" for key, value in env.items())] if env else []
        return [ip_command(), "netns", "exec", self.name, *extra, *args]

    async def link_down(self) -> None:
        """Cut the cable: the root-side veth goes down; processes on both sides keep running. From the host,
        packets to the root side are silently lost (connects time out); from the root namespace, the host's
        /30 is `unreachable` (EHOSTUNREACH at once), never routed anywhere else."""
        await run_ip("link", "set", self.veth, "down")

    async def link_up(self) -> None:
        """Plug the cable back in."""
        await run_ip("link", "set", self.veth, "up")

    async def close(self) -> None:
        """Delete the veth pair, the guard route and the namespace's name. Kills nothing: a process still inside
        keeps an (unnamed, now unconnected) namespace until it exits."""
        async with _allocation_lock():
            await _remove(self.name, self.subnet)

    @classmethod
    async def create(cls) -> NetHost:
        """A new host (removing other processes' leftovers first); NetHostError if it cannot be made."""
        name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        if len(name) > 15:  # IFNAMSIZ - 1
            raise NetHostError(f"host name {name} is too long for a network interface name")
        async with _allocation_lock():
            await _remove_stale()
            used = await _used_subnets()
            subnet = next((s for s in NETWORK.subnets(new_prefix=30) if s not in used), None)
            if subnet is None:
                raise NetHostError(f"every /30 of {NETWORK} is taken")
            root_side, host_side = subnet[1], subnet[2]
            host = cls(name, str(host_side), str(root_side), str(subnet))
            try:
                # Before the link exists: while it is down, the root namespace must not route the host's
                # addresses out of its default route.
                await run_ip("route", "replace", "unreachable", str(subnet), "metric", _GUARD_METRIC)
                await run_ip("netns", "add", name)
                await run_ip("-n", name, "link", "set", "lo", "up")
                await run_ip("link", "add", host.veth, "type", "veth", "peer", "name", HOST_LINK, "netns", name)
                if _IPV6:  # IPv4 only: no link-local IPv6 address, so no IPv6 chatter on the link
                    await run_ip("link", "set", host.veth, "addrgenmode", "none")
                    await run_ip("-n", name, "link", "set", HOST_LINK, "addrgenmode", "none")
                await run_ip("addr", "add", f"{root_side}/30", "dev", host.veth)
                await run_ip("-n", name, "addr", "add", f"{host_side}/30", "dev", HOST_LINK)
                await run_ip("link", "set", host.veth, "up")
                await run_ip("-n", name, "link", "set", HOST_LINK, "up")
            except BaseException:
                with contextlib.suppress(NetHostError):
                    await _remove(name, host.subnet)
                raise
        return host


@contextlib.asynccontextmanager
async def net_host() -> AsyncIterator[NetHost]:
    """A new simulated host, removed (namespace, veth, route) when the block exits, however it exits."""
    host = await NetHost.create()
    try:
        yield host
    finally:
        await host.close()


def on_host(host: NetHost, service: Service, env: Mapping[str, str] | None = None) -> Service:
    """`service` (a ServiceProcess or subclass, not started yet) set to run inside `host`, with `env` added to its
    environment (e.g. STREAMFORGE_HTTP_HOST=host.address to serve on the host's link instead of its loopback)."""
    service.prefix = host.argv([], env)
    return service


class NetHostFactory(Protocol):
    """make(count): `count` new hosts, each on its own /30."""

    async def __call__(self, count: int = 1) -> list[NetHost]: ...


@contextlib.asynccontextmanager
async def net_host_factory() -> AsyncIterator[NetHostFactory]:
    """What the `net_hosts` fixture yields: make(count) -> that many new hosts, all removed when the block exits.
    A host that cannot be made fails the test with the reason (pytest.fail), never a skip."""
    async with contextlib.AsyncExitStack() as hosts:

        async def make(count: int = 1) -> list[NetHost]:
            made, failure = [], None
            for _ in range(count):
                try:
                    made.append(await hosts.enter_async_context(net_host()))
                except NetHostError as exc:
                    failure = str(exc)
                    break
            if failure is not None:  # outside the except: the reason alone, not a chain of tracebacks
                pytest.fail(f"cannot make a simulated network host: {failure}", pytrace=False)
            return made

        yield make


@pytest.fixture
async def net_hosts() -> AsyncIterator[NetHostFactory]:
    """make(count) -> `count` new NetHosts, all removed at teardown, also when the test fails. A test module
    takes it with `net_hosts = netns.net_hosts` at its top (importing the name would trip ruff's F811)."""
    if shutil.which("ip") is None and not any(os.access(p, os.X_OK) for p in ("/usr/sbin/ip", "/sbin/ip")):
        pytest.fail("cannot make simulated network hosts: iproute2's `ip` is not installed", pytrace=False)
    async with net_host_factory() as make:
        yield make
