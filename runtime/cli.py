"""The `streamforge` command: run flows, flow tooling, node palette, embedded Kafka, schema registry."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamforge.engine.flow import FlowDocument
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import Problem
from streamforge.runtime.kafka.install import KAFKA_VERSION, InstallError, distribution, install
from streamforge.runtime.logs import configure_logging
from streamforge.runtime.process import return_freed_memory

if TYPE_CHECKING:
    from streamforge.runtime.control_plane.tls import TlsFiles
    from streamforge.runtime.kafka.access import KafkaAccess


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """StreamForge: an industrial data gateway whose every reading lands in a local Kafka first.

    \b
    up            control plane + gateway + embedded Kafka, demo flow deployed
    control-plane the control plane alone; gateways register and sync from it
    gateway       a gateway synced from a control plane (embedded Kafka, offline cache)
    run           run one flow: gateway + embedded Kafka (+ health and metrics)
    user          reset a user's password on the control plane's database (lost admin password)
    flow          validate, format, diff and plan flow documents
    node          list node types; scaffold a node package
    kafka         install and run the embedded Apache Kafka (single-node KRaft)
    registry      serve the Confluent-compatible schema registry
    roundtrip     smoke check: embedded Kafka + a round trip of sample records of every type
    """
    configure_logging("cli")
    return_freed_memory()


@main.group()
def kafka() -> None:
    """Install, start, stop and inspect the embedded Apache Kafka broker."""


_cache_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    envvar="STREAMFORGE_CACHE_DIR",
    help="Where the Kafka jars live [env STREAMFORGE_CACHE_DIR; default ~/.cache/streamforge].",
)
_data_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="STREAMFORGE_KAFKA_DATA_DIR",
    help="Broker data, configs and logs [env STREAMFORGE_KAFKA_DATA_DIR; default ~/.local/share/streamforge/kafka].",
)


_home_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), envvar="STREAMFORGE_HOME",
    default=Path.home() / ".local" / "share" / "streamforge", show_default=True,
    help="Control-plane database, Kafka data, registry, node state [env STREAMFORGE_HOME].",
)  # fmt: skip


def _bootstrap_option(command: Callable[..., None]) -> Callable[..., None]:
    """--bootstrap and --kafka-credentials: an existing cluster instead of the embedded broker."""
    command = click.option(
        "--kafka-credentials", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
        envvar="STREAMFORGE_KAFKA_CREDENTIALS",
        help="With --bootstrap: the 0600 SCRAM login file of that cluster (another gateway's embedded broker keeps "
        "its own in <its data dir>/kafka/client.credentials) [env STREAMFORGE_KAFKA_CREDENTIALS].",
    )(command)  # fmt: skip
    return click.option(
        "--bootstrap", envvar="STREAMFORGE_KAFKA_BOOTSTRAP", default=None,
        help="Use this existing Kafka cluster instead of the embedded broker [env STREAMFORGE_KAFKA_BOOTSTRAP].",
    )(command)  # fmt: skip


def _existing_kafka(bootstrap: str | None, credentials: Path | None) -> KafkaAccess | None:
    """The cluster --bootstrap names, with --kafka-credentials' login; None: the embedded broker."""
    from streamforge.runtime.kafka.access import CredentialsError, KafkaAccess

    if bootstrap is None:
        if credentials is not None:
            _fail("--kafka-credentials needs --bootstrap: the embedded broker's clients use its own login")
        return None
    try:
        return KafkaAccess.load(bootstrap, credentials)
    except CredentialsError as exc:
        _fail(str(exc))
        raise


_registry_option = click.option(
    "--registry", "registry_url", envvar="STREAMFORGE_REGISTRY_URL", default=None,
    help="The schema registry of the Kafka cluster (one per cluster) [env STREAMFORGE_REGISTRY_URL]; "
    "default: a local one in the data dir.",
)  # fmt: skip


def _cidrs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    import ipaddress

    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an address or CIDR, e.g. 10.0.0.5 or 10.0.0.0/24") from None
    return values


_trusted_proxy_option = click.option(
    "--trusted-proxy", "trusted_proxies", multiple=True, callback=_cidrs, metavar="CIDR",
    help="A reverse proxy (address or CIDR, repeat for more) whose X-Forwarded-For names the client; from any "
    "other peer the header is ignored [default: none].",
)  # fmt: skip


@kafka.command("install")
@_cache_option
@click.option("--force", is_flag=True, help="Resolve again even if already installed.")
def kafka_install(cache_dir: Path | None, force: bool) -> None:
    """Resolve Apache Kafka (pinned) and its dependencies from Maven Central with mvn. Idempotent."""
    try:
        dist = install(cache_dir, force=force)
    except InstallError as exc:
        _fail(str(exc))
    jars = len(list(dist.libs.glob("*.jar")))
    click.echo(json.dumps({"version": dist.version, "home": str(dist.home), "jars": jars}))


def _broker(cache_dir: Path | None, data_dir: Path | None):  # type: ignore[no-untyped-def]
    from streamforge.runtime.kafka.broker import Broker

    return Broker(distribution(cache_dir), data_dir)


@kafka.command("start")
@_cache_option
@_data_option
@click.option("--port", type=int, default=None, help="Client port (default: the last one used, else a free one).")
@click.option("--controller-port", type=int, default=None, help="KRaft controller port (default: as --port).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for readiness.")
@click.option("--no-topics", is_flag=True, help="Do not create the catalogue's topics.")
def kafka_start(
    cache_dir: Path | None,
    data_dir: Path | None,
    port: int | None,
    controller_port: int | None,
    timeout: float,
    no_topics: bool,
) -> None:
    """Start the broker in the background; return once it accepts produce requests."""
    from streamforge.runtime.kafka.broker import process_alive, wait_ready
    from streamforge.runtime.kafka.topics import ensure_topics

    broker = _broker(cache_dir, data_dir)
    if broker.running_pid() is not None:
        _fail(f"Kafka already runs from {broker.data_dir} (pid {broker.running_pid()})")
    try:
        settings = broker.prepare(port, controller_port)
    except (InstallError, RuntimeError) as exc:
        _fail(str(exc))
    pid = broker.start_detached(settings)

    async def ready() -> None:
        access = broker.access(settings)
        await wait_ready(access, timeout, alive=lambda: process_alive(pid))
        if not no_topics:
            await ensure_topics(access)

    try:
        asyncio.run(ready())
    except (RuntimeError, TimeoutError) as exc:
        broker.stop_detached()
        _fail(str(exc))
    click.echo(
        json.dumps(
            {
                "pid": pid,
                "bootstrap": settings.bootstrap,
                "credentials_file": str(broker.credentials_path),
                "version": broker.dist.version,
                "ready": True,
                "data_dir": str(broker.data_dir),
            }
        )
    )


@kafka.command("stop")
@_cache_option
@_data_option
def kafka_stop(cache_dir: Path | None, data_dir: Path | None) -> None:
    """Stop the background broker (SIGTERM, then SIGKILL after 30 s)."""
    broker = _broker(cache_dir, data_dir)
    stopped = broker.stop_detached()
    click.echo(json.dumps({"stopped": stopped, "data_dir": str(broker.data_dir)}))


@kafka.command("status")
@_cache_option
@_data_option
def kafka_status(cache_dir: Path | None, data_dir: Path | None) -> None:
    """Print JSON: pid, bootstrap address, version, ready. Exit 1 when not ready."""
    from streamforge.runtime.kafka.broker import accepts_produce

    broker = _broker(cache_dir, data_dir)
    settings = broker.load_settings()
    pid = broker.running_pid()
    bootstrap = settings.bootstrap if settings else None
    ready = bool(pid and settings and asyncio.run(accepts_produce(broker.access(settings), timeout_s=5.0)))
    click.echo(
        json.dumps(
            {
                "pid": pid,
                "bootstrap": bootstrap,
                "credentials_file": str(broker.credentials_path),
                "version": broker.dist.version,
                "ready": ready,
                "installed": broker.dist.is_installed(),
                "data_dir": str(broker.data_dir),
            }
        )
    )
    sys.exit(0 if ready else 1)


def _load_or_fail(path: Path) -> FlowDocument:
    from streamforge.engine.flow import load_flow
    from streamforge.engine.problems import FlowInvalid

    try:
        return load_flow(path.read_bytes())
    except FlowInvalid as exc:
        _report_problems(path, exc.problems)
    except OSError as exc:
        _fail(f"{path}: cannot read: {exc.strerror}")
    raise AssertionError("unreachable")


def _compiled(path: Path) -> ExecutionPlan:
    """FILE's plan, secrets as stand-ins (to validate or plan); every problem of the document reported (exit 1) if
    it does not compile."""
    from streamforge.engine.compiler import compile_document
    from streamforge.engine.node_types import load_node_types
    from streamforge.engine.problems import FlowInvalid

    try:
        return compile_document(_load_or_fail(path).model_dump(by_alias=True), load_node_types(deferred=True))
    except FlowInvalid as exc:
        _report_problems(path, exc.problems)
    raise AssertionError("unreachable")


def _compiled_to_run(path: Path) -> ExecutionPlan:
    """FILE's plan with secrets from STREAMFORGE_SECRET_<NAME>, compiled apart from this process (the gateway it
    becomes); every problem reported (exit 1) as by _compiled."""
    from streamforge.engine.problems import FlowInvalid
    from streamforge.runtime.gateway.compiling import CompilerFailed, compile_apart_blocking

    try:
        return compile_apart_blocking(path.read_bytes(), include_plugins=True, secrets_from_env=True)
    except OSError as exc:
        _fail(f"{path}: cannot read: {exc.strerror}")
    except CompilerFailed as exc:
        _fail(f"{path}: {exc}")
    except FlowInvalid as exc:
        _report_problems(path, exc.problems)
    raise AssertionError("unreachable")


def _report_problems(path: Path, problems: list[Problem]) -> None:
    click.echo(json.dumps({"file": str(path), "valid": False, "problems": [p.to_dict() for p in problems]}, indent=2))
    for problem in problems:
        click.echo(f"{path}: {problem}", err=True)
    sys.exit(1)


@main.group()
def flow() -> None:
    """Validate, format, diff and plan flow documents (streamforge.flow/v1)."""


@flow.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def flow_validate(files: tuple[Path, ...]) -> None:
    """Check documents and compile them; list every problem with its JSON pointer. Exit 1 if any."""
    for path in files:
        _compiled(path)
        click.echo(json.dumps({"file": str(path), "valid": True}))


@flow.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Exit 1 if a file is not canonical; change nothing.")
def flow_fmt(files: tuple[Path, ...], check: bool) -> None:
    """Rewrite documents in canonical form (stable order, one node per block) so they diff cleanly."""
    from streamforge.engine.flow import dump_flow

    unformatted = []
    for path in files:
        text = dump_flow(_load_or_fail(path))
        if path.read_text() != text:
            unformatted.append(str(path))
            if not check:
                path.write_text(text)
    click.echo(json.dumps({"changed" if not check else "unformatted": unformatted}))
    sys.exit(1 if check and unformatted else 0)


@flow.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
def flow_diff(old: Path, new: Path) -> None:
    """Nodes added, removed and changed, edges added and removed. Moving a node is not a change."""
    from streamforge.engine.flow import diff_flows

    click.echo(json.dumps(diff_flows(_load_or_fail(old), _load_or_fail(new)).to_dict(), indent=2))


@flow.command("plan")
@click.argument("file", type=click.Path(path_type=Path))
def flow_plan(file: Path) -> None:
    """The execution plan: tasks, topics, consumer groups, and the process each node runs in."""
    click.echo(json.dumps(_compiled(file).to_dict(), indent=2))


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@_home_option
@_bootstrap_option
@_registry_option
@click.option("--port", type=int, default=8080, show_default=True, help="Health and metrics port (0: any free).")
def run(file: Path, data_dir: Path, bootstrap: str | None, kafka_credentials: Path | None, registry_url: str | None,
        port: int) -> None:  # fmt: skip
    """Run a gateway with embedded Kafka and FILE's flow until Ctrl-C. An invalid flow starts nothing."""
    existing = _existing_kafka(bootstrap, kafka_credentials)
    from streamforge.runtime.gateway.run import run_plan

    plan = _compiled_to_run(file)
    from streamforge.runtime.gateway.gateway import DeployFailed

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run_plan(plan, data_dir, existing, port, click.echo, registry_url))
    except DeployFailed as exc:
        _fail(str(exc))


def _control_plane_tls(data_dir: Path, host: str, tls_mode: str | None, tls_cert: Path | None, tls_key: Path | None,
                       tls_names: tuple[str, ...] = ()) -> TlsFiles | None:  # fmt: skip
    """The control plane's HTTPS files: given ones, else (`auto`, the default off loopback) its own CA's."""
    from streamforge.runtime.control_plane.tls import TlsFiles, self_signed
    from streamforge.runtime.http import is_loopback

    if bool(tls_cert) != bool(tls_key):
        _fail("--tls-cert and --tls-key go together")
    loopback = is_loopback(host)
    if tls_cert and tls_key:
        return TlsFiles(tls_cert, tls_key)
    if (tls_mode or ("off" if loopback else "auto")) == "auto":
        return self_signed(data_dir / "tls", list(tls_names) + ([] if loopback else [host]))
    return None


@main.command("control-plane")
@_home_option
@click.option("--host", default=None, help="Address to serve on, e.g. 0.0.0.0 or this host's IP [default: "
              "127.0.0.1, or $STREAMFORGE_HTTP_HOST]. Off loopback it serves HTTPS (--tls auto) unless told "
              "otherwise.")  # fmt: skip
@click.option("--port", type=int, default=8080, show_default=True, help="API, registry, health and metrics port.")
@click.option("--poll-interval", type=float, default=30.0, show_default=True,
              help="Seconds between a gateway's polls; 3 missed ones mark it OFFLINE.")  # fmt: skip
@click.option("--tls", "tls_mode", type=click.Choice(["auto", "off"]), default=None,
              help="auto: HTTPS with a CA and certificate made on first start in <data-dir>/tls (its fingerprint is "
              "printed; gateways pin ca.pem with --ca). Default: auto unless serving on loopback.")  # fmt: skip
@click.option("--tls-cert", type=click.Path(path_type=Path, exists=True), default=None,
              help="HTTPS with this certificate chain (PEM) instead; with --tls-key.")  # fmt: skip
@click.option("--tls-key", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--tls-name", "tls_names", multiple=True, help="Extra host name or IP for the generated certificate.")
@click.option("--gateway-token-days", type=click.FloatRange(min=0.00005, max=3650), default=365.0, show_default=True,
              help="Lifetime of gateway JWTs; gateways renew in the last month (or last quarter) of it.")  # fmt: skip
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="A host name clients use to reach this server (repeat for more); other Host headers get 400. "
              "Always allowed: the --host address (and localhost on loopback). On 0.0.0.0 without any, every "
              "Host is answered, with a warning.")  # fmt: skip
@_trusted_proxy_option
def control_plane_command(data_dir: Path, host: str | None, port: int, poll_interval: float, tls_mode: str | None,
                          tls_cert: Path | None, tls_key: Path | None, tls_names: tuple[str, ...],
                          gateway_token_days: float, allowed_hosts: tuple[str, ...],
                          trusted_proxies: tuple[str, ...]) -> None:  # fmt: skip
    """The control plane alone: gateways register with it, are approved, and sync their flows from it."""
    from streamforge.runtime.control_plane.serve import serve_control_plane
    from streamforge.runtime.files import private_dir
    from streamforge.runtime.http import http_host

    private_dir(data_dir)
    host = host or http_host()
    tls = _control_plane_tls(data_dir, host, tls_mode, tls_cert, tls_key, tls_names)
    asyncio.run(serve_control_plane(data_dir, host, port, click.echo, poll_interval, tls, gateway_token_days * 86400,
                                    trusted_proxies=trusted_proxies, named_hosts=allowed_hosts))  # fmt: skip


@main.command()
@click.option("--control-plane", "control_plane", required=True, envvar="STREAMFORGE_CONTROL_PLANE",
              help="The control plane's URL: https://host:port (plain http only to loopback).")  # fmt: skip
@click.option("--name", default=None, help="Shown in the fleet [default: the host name].")
@click.option("--label", "labels", multiple=True, help="key=value, e.g. site=north (repeat for more).")
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="STREAMFORGE_GATEWAY_HOME",
              default=Path.home() / ".local" / "share" / "streamforge-gateway", show_default=True,
              help="Kafka data, cached state, credentials (0600) [env STREAMFORGE_GATEWAY_HOME].")  # fmt: skip
@_bootstrap_option
@click.option("--port", type=int, default=0, show_default=True, help="Health and metrics port (0: any free).")
@click.option("--enrolment-key", envvar="STREAMFORGE_ENROLMENT_KEY", default=None,
              help="Pre-approval from an Admin (POST /api/v1/enrolment-keys) [env STREAMFORGE_ENROLMENT_KEY]."
)  # fmt: skip
@click.option("--enrolment-key-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Read the enrolment key from this file (0600) and delete it: the key never sits in an "
              "environment or an argument list.")  # fmt: skip
@click.option("--poll-interval", type=float, default=30.0, show_default=True, help="Seconds between polls.")
@click.option("--registry", "registry_url", envvar="STREAMFORGE_REGISTRY_URL", default=None,
              help="The Kafka cluster's own schema registry [default: the control plane's, at /schemas].")  # fmt: skip
@click.option("--ca", "ca_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="CA certificate the control plane's TLS certificate must chain to (pinned).")  # fmt: skip
def gateway(control_plane: str, name: str | None, labels: tuple[str, ...], data_dir: Path, bootstrap: str | None,
            kafka_credentials: Path | None, port: int, enrolment_key: str | None, enrolment_key_file: Path | None,
            poll_interval: float, registry_url: str | None, ca_file: Path | None) -> None:  # fmt: skip
    """A gateway synced from a control plane; it keeps running from its cache when the control plane is away."""
    import os
    import socket

    os.environ.pop("STREAMFORGE_ENROLMENT_KEY", None)  # read above: not for workers or the Kafka JVM to inherit
    if enrolment_key_file is not None:
        enrolment_key = enrolment_key_file.read_text().strip()
        enrolment_key_file.unlink()

    from streamforge.runtime.control_plane.fleet import parse_labels
    from streamforge.runtime.errors import ApiError
    from streamforge.runtime.gateway.agent import InsecureControlPlane, check_transport
    from streamforge.runtime.gateway.standalone import run_gateway

    existing = _existing_kafka(bootstrap, kafka_credentials)
    try:
        check_transport(control_plane)
        parsed = parse_labels(list(labels), "--label")
    except (InsecureControlPlane, ApiError) as exc:
        _fail(str(exc))
    data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging("gateway", log_dir=data_dir / "logs")
    asyncio.run(run_gateway(control_plane, data_dir, name or socket.gethostname(), parsed, click.echo, existing,
                            port, enrolment_key, poll_interval, ca_file, registry_url))  # fmt: skip


@main.command()
@_home_option
@_bootstrap_option
@_registry_option
@click.option("--port", type=int, default=8080, show_default=True, help="API, health and metrics port.")
@click.option(
    "--demo",
    type=click.Path(path_type=Path),
    default=Path("flows/demo.json"),
    show_default=True,
    help="Flow to store and deploy on first start.",
)
@click.option(
    "--devices/--no-devices",
    default=True,
    show_default=True,
    help="Also run the simulated Modbus TCP PLC (:15020) and OPC UA server (:14840) the demo flow reads.",
)
@click.option("--host", default=None, help="Address the control plane serves on [default: 127.0.0.1, or "
              "$STREAMFORGE_HTTP_HOST]. Off loopback it serves HTTPS (its own CA, in <data-dir>/tls) unless "
              "--tls off; the local gateway's port stays on 127.0.0.1 unless $STREAMFORGE_HTTP_HOST says so."
)  # fmt: skip
@click.option("--tls", "tls_mode", type=click.Choice(["auto", "off"]), default=None,
              help="auto: HTTPS with a CA and certificate made on first start. Default: auto unless on loopback."
)  # fmt: skip
@_trusted_proxy_option
def up(data_dir: Path, bootstrap: str | None, kafka_credentials: Path | None, registry_url: str | None, port: int,
       demo: Path, devices: bool, host: str | None, tls_mode: str | None,
       trusted_proxies: tuple[str, ...]) -> None:  # fmt: skip
    """Control plane + gateway + embedded Kafka on this machine; Ctrl-C stops, the next `up` resumes."""
    from streamforge.runtime.http import http_host
    from streamforge.runtime.up import up as run_up

    existing = _existing_kafka(bootstrap, kafka_credentials)
    data_dir.mkdir(parents=True, exist_ok=True)
    host = host or http_host()
    tls = _control_plane_tls(data_dir, host, tls_mode, None, None)
    asyncio.run(run_up(data_dir, existing, port, demo, click.echo, registry_url, devices, host, tls, trusted_proxies))


@main.group()
def user() -> None:
    """Control-plane users, on its database file (for what the API cannot do: a lost admin password)."""


@user.command("reset-password")
@click.argument("username")
@_home_option
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin instead of generating one.")
def user_reset_password(username: str, data_dir: Path, password_stdin: bool) -> None:
    """Give USERNAME a new password (generated and printed once, or read from stdin) and revoke all its tokens."""
    import secrets

    from streamforge.runtime.control_plane.auth import hash_password
    from streamforge.runtime.control_plane.operations import audit_digest
    from streamforge.runtime.control_plane.store import Store
    from streamforge.runtime.errors import ApiError

    database = data_dir / "control-plane.sqlite"
    if not database.exists():
        _fail(f"{database} does not exist: give the control plane's --data-dir (or STREAMFORGE_HOME)")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else secrets.token_urlsafe(18)
    store = Store(database)
    try:
        revoked = store.set_password(username, hash_password(password), None)
    except ApiError as exc:
        _fail(exc.message)
    store.audit("cli", "user.reset_password", audit_digest({"username": username}), username, "ok",
                f"{revoked} token(s) revoked")  # fmt: skip
    disabled = bool(store.user(username)["disabled"])  # type: ignore[index]
    click.echo(json.dumps({"username": username, "revoked_tokens": revoked, "disabled": disabled,
                           **({} if password_stdin else {"password": password, "note": "shown once"})}))  # fmt: skip


@main.command()
@click.option(
    "--url",
    envvar="STREAMFORGE_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The control plane (`streamforge up` or `streamforge control-plane`) [env STREAMFORGE_URL].",
)
@click.option(
    "--token",
    envvar="STREAMFORGE_TOKEN",
    required=True,
    help='An agent\'s token: POST /api/v1/tokens {"name": ..., "scope": "mcp"} (works only on /mcp); its user\'s role '
    "bounds every tool [env STREAMFORGE_TOKEN].",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="CA certificate the control plane's TLS certificate must chain to (its <data-dir>/tls/ca.pem).",
)
def mcp(url: str, token: str, ca_file: Path | None) -> None:
    """Serve the MCP tools over stdio (for an agent started by an MCP client), acting as TOKEN's user."""
    from streamforge.runtime.control_plane.mcp_stdio import serve_stdio

    asyncio.run(serve_stdio(url, token, ca_file))


@main.group()
def node() -> None:
    """The node palette and the SDK scaffolder."""


@node.command("list")
@click.option("--json", "as_json", is_flag=True, help="Full palette with ports and config JSON Schemas.")
def node_list(as_json: bool) -> None:
    """Every registered node type: built-ins and installed packages."""
    from streamforge.engine.node_types import load_node_types

    registry = load_node_types()
    if as_json:
        click.echo(json.dumps([cls.describe() | {"origin": registry.origin(cls.type)} for cls in registry], indent=2))
        return
    for cls in registry:
        ins = ", ".join(f"{p.name}:{p.type}" for p in cls.inputs) or "-"
        outs = ", ".join(f"{p.name}:{p.type}" for p in cls.outputs) or "-"
        click.echo(
            f"{cls.type:<16} {cls.kind:<9} {cls.category:<11} in[{ins}] out[{outs}]  ({registry.origin(cls.type)})"
        )


@node.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(["processor", "source", "sink"]), default="processor", show_default=True)
@click.option(
    "--dir",
    "target",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to create the package [default: ./streamforge-node-NAME].",
)
def node_new(name: str, kind: str, target: Path | None) -> None:
    """Scaffold an installable node package: one working node, its tests, its entry point."""
    from streamforge.engine.scaffold import scaffold_node_package

    target = target or Path(f"streamforge-node-{name.replace('_', '-')}")
    try:
        files = scaffold_node_package(name, target, kind)  # type: ignore[arg-type]
    except (ValueError, FileExistsError) as exc:
        _fail(str(exc))
    click.echo(
        json.dumps(
            {
                "created": str(target),
                "files": [str(f.relative_to(target)) for f in files],
                "next": f"pip install -e '{target}[test]' && pytest {target}",
            }
        )
    )


@main.group()
def registry() -> None:
    """The Confluent-compatible schema registry."""


@registry.command("serve")
@click.option("--db", type=click.Path(path_type=Path), default=Path("registry.sqlite"), show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8081, show_default=True)
def registry_serve(db: Path, host: str, port: int) -> None:
    """Serve the registry API (subjects, versions, ids, BACKWARD compatibility) from a SQLite file."""
    import uvicorn

    from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app

    uvicorn.run(schema_registry_app(SchemaStore(db)), host=host, port=port, log_config=None)


@main.command()
@_home_option
@click.option("--records", type=int, default=1000, show_default=True, help="Telemetry readings to send.")
@_bootstrap_option
def roundtrip(data_dir: Path, records: int, bootstrap: str | None, kafka_credentials: Path | None) -> None:
    """Smoke check: embedded Kafka and registry up, sample records of every type sent and read back."""
    from streamforge.runtime.roundtrip import round_trip

    existing = _existing_kafka(bootstrap, kafka_credentials)
    data_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"StreamForge round trip: Apache Kafka {KAFKA_VERSION} (KRaft), Avro in the Confluent wire format")
    received = asyncio.run(round_trip(data_dir, records, existing, click.echo))
    if received == 0:
        _fail("no records came back")


if __name__ == "__main__":
    main()
