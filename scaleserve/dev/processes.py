"""Processes of the local stack: start them marked, stop them gracefully, find leftovers.

Every process the stack starts (the runner, the operator, each pod's container and whatever
those spawn) carries ``SCALESERVE_DEV_STACK=<marker>`` in its environment, inherited by its
children. `dev down` therefore finds every process that belongs to a stack by reading
``/proc/<pid>/environ``, and never signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

MARKER_ENV = "SCALESERVE_DEV_STACK"

# Popen handles of processes started by this interpreter, so that they are reaped
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a detached process (its own process group, and its own session unless
    `new_session` is false), output appended to `log`.

    Staying in the caller's session matters where processes are measured against each other:
    with the kernel's autogroup scheduling each session gets an equal share of the CPU."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=new_session,
            process_group=None if new_session else 0,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count; one of ours is reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        _reap(pid)
        return False
    return True


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries this stack's marker."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def lower_priority(pid: int, nice: int) -> None:
    """Run a process, the children it has started and those it will start, at `nice`
    (idempotent: the same values again change nothing).

    Where the kernel groups processes by session for scheduling (autogroup), a nice value only
    ranks processes within their own session, so the session's own nice is set as well. The
    runner lowers an engine only once it is Ready: a session lowered at its start, next to a
    spinning engine, was seen to go unscheduled for minutes (a restarted engine on a 6.18
    kernel: no CPU time for 5 minutes, then up a minute after its session's nice went back
    to 0)."""
    if nice == 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.setpriority(os.PRIO_PGRP, pid, nice)  # the pod's process group: pid leads it
    with contextlib.suppress(OSError):  # no autogroup in this kernel, or the process is gone
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group led by `pid` (our processes lead their own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(pid: int, grace_s: float, *, group: bool = True) -> None:
    """SIGTERM `pid` (the leader only: it may drain and stop its children itself), wait up to
    `grace_s`, then SIGKILL it and, with `group`, every process left in its group."""
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_gone([pid], grace_s)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if group:
        signal_group(pid, signal.SIGKILL)
    wait_gone([pid], 10.0)
    _reap(pid)


def wait_gone(pids: Iterable[int], timeout_s: float) -> bool:
    pending = list(pids)
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [p for p in pending if alive(p)]
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_marked(marker: str, grace_s: float = 5.0) -> list[int]:
    """Stop every process carrying `marker`: SIGTERM, then SIGKILL after `grace_s`."""
    pids = marked_pids(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not wait_gone(pids, grace_s):
        for pid in marked_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(pids, 10.0)
    for pid in pids:
        _reap(pid)
    return pids


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def listening() -> set[tuple[str, int]]:
    """IPv4 (address, port) pairs with a listening TCP socket in this network namespace."""
    return parse_proc_net_tcp(Path("/proc/net/tcp").read_text())


def parse_proc_net_tcp(text: str) -> set[tuple[str, int]]:
    """The listening (address, port) pairs of a /proc/net/tcp table."""
    found = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # LISTEN
            continue
        hex_ip, hex_port = fields[1].split(":")
        address = socket.inet_ntoa(int(hex_ip, 16).to_bytes(4, "little"))
        found.add((address, int(hex_port, 16)))
    return found


def http_ok(url: str) -> bool:
    """Whether `url` answers 200: a process's health or readiness endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
