"""Several gateway processes per pod: one listening socket, N workers, one internal port.

The supervisor (the pod's main process) binds the API socket once (uvicorn's own
`Config.bind_socket`) and starts `workers` processes with multiprocessing's spawn, as
uvicorn's `--workers` does; each worker is a whole gateway (discovery, health probes, pool,
admission) running uvicorn on its copy of the socket, and the kernel hands each new
connection to one of them. The supervisor itself serves the internal port: /stats sums the
workers' own /stats read over their Unix sockets at the moment of the request (pod_stats.py),
/metrics adds their counters and histograms through prometheus_client's multiprocess mode,
and /livez fails when a worker's does. SIGTERM is passed to every worker, which drains as a
single process would; a worker that dies otherwise is started again.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import uvicorn

from scaleserve.gateway.internal import PROMETHEUS, http_server
from scaleserve.gateway.metrics import pod_metrics
from scaleserve.gateway.pod_stats import WorkerSilentError, merge_stats, read_workers, worker_get
from scaleserve.gateway.server import DRAIN_MARGIN_S
from scaleserve.gateway.settings import GatewaySettings, worker_share

log = logging.getLogger("scaleserve.gateway")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# a worker that exits this soon after its start failed to start (bad settings, a port in
# use): starting it again would fail the same way, so the pod stops instead
STARTUP_FAILURE_S = 10.0
SPAWN = multiprocessing.get_context("spawn")
multiprocessing.allow_connection_pickling()  # the listening socket travels to each worker


def worker_settings(settings: GatewaySettings, index: int) -> GatewaySettings:
    """Worker `index`'s settings: the pod's admission and connection limits divided."""
    n = settings.workers
    return settings.model_copy(
        update={
            "max_concurrency": worker_share(settings.max_concurrency, n, index),
            "max_queue": worker_share(settings.max_queue, n, index),
            "max_connections": max(16, worker_share(settings.max_connections, n, index)),
        }
    )


def run_worker(settings: GatewaySettings, sock: socket.socket, internal_path: str) -> None:
    """A worker process: a whole gateway on the shared socket, its /stats on a Unix socket."""
    from scaleserve.gateway.app import create_app
    from scaleserve.gateway.cli import configure_logging
    from scaleserve.gateway.server import serve
    from scaleserve.tracing import tracer_from_env

    configure_logging(settings.log_level)
    threading.Thread(target=_drain_when_orphaned, args=(os.getppid(),), daemon=True).start()
    app = create_app(settings, tracer_from_env("scaleserve-gateway"), internal_path=internal_path)
    serve(app, settings, sockets=[sock])


def _drain_when_orphaned(parent: int) -> None:
    """A supervisor killed outright (SIGKILL) cannot pass SIGTERM on: its workers notice they
    were re-parented and drain themselves rather than hold the port."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(self, settings: GatewaySettings, run_dir: Path) -> None:
        self.settings = settings
        self.paths = [str(run_dir / f"worker-{i}.sock") for i in range(settings.workers)]
        self.metrics_dir = str(run_dir / "metrics")
        self.procs: list[BaseProcess] = []
        self.started_at: list[float] = []
        self.stopping = threading.Event()
        self.sock: socket.socket | None = None

    # -- the internal port -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return merge_stats(read_workers(self.paths), self.settings.stats_window)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        try:
            if path == "/stats":
                return 200, "application/json", orjson.dumps(self.stats())
            if path == "/metrics":
                return 200, PROMETHEUS, pod_metrics(self.metrics_dir, self.stats)
            if path == "/livez":
                return self.livez()
        except WorkerSilentError as exc:
            return 503, "text/plain", f"{exc}\n".encode()
        return 404, "text/plain", b"not found\n"

    def livez(self) -> tuple[int, str, bytes]:
        for path in self.paths:
            if not os.path.exists(path):
                continue  # starting or gone
            try:
                status, body = worker_get(path, "/livez")
            except FileNotFoundError:
                continue
            except OSError as exc:
                return 503, "text/plain", f"worker {Path(path).name}: {exc}\n".encode()
            if status != 200:
                return status, "text/plain", body
        return 200, "text/plain", b"ok\n"

    # -- the workers -----------------------------------------------------------------------

    def start(self, index: int) -> BaseProcess:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths[index])  # a killed worker's socket: it holds nothing now
        proc = SPAWN.Process(
            target=run_worker,
            args=(worker_settings(self.settings, index), self.sock, self.paths[index]),
            name=f"gateway-worker-{index}",
        )
        proc.start()
        return proc

    def on_term(self, sig: int, frame: FrameType | None) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("SIGTERM: draining %d workers", len(self.procs))
        if self.sock is not None:
            self.sock.close()  # the workers' copies close as they stop accepting
        for proc in self.procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    def watch(self) -> int:
        """Restart workers that die; returns the exit status once stopping (or failed)."""
        while not self.stopping.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc.exitcode is None:
                    continue
                if time.monotonic() - self.started_at[i] < STARTUP_FAILURE_S:
                    log.error("worker %d exited with %s at its start", i, proc.exitcode)
                    self.on_term(signal.SIGTERM, None)
                    return 1
                log.error("worker %d exited with %s; starting it again", i, proc.exitcode)
                self.procs[i] = self.start(i)
                self.started_at[i] = time.monotonic()
        return 0

    def run(self) -> int:
        config = uvicorn.Config("", host=self.settings.host, port=self.settings.port)
        self.sock = config.bind_socket()
        internal = http_server((self.settings.host, self.settings.internal_port), self.answer)
        threading.Thread(target=internal.serve_forever, name="pod-internal", daemon=True).start()
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        for i in range(self.settings.workers):
            self.procs.append(self.start(i))
            self.started_at.append(time.monotonic())
        log.info("%d gateway workers on port %d", self.settings.workers, self.settings.port)
        status = self.watch()
        grace = self.settings.drain_timeout + DRAIN_MARGIN_S + 5
        deadline = time.monotonic() + grace
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            status = status or (proc.exitcode != 0)
        internal.shutdown()
        internal.server_close()
        return int(status)


def serve_workers(settings: GatewaySettings) -> int:
    """Run the pod's workers until SIGTERM; the exit status (0 once every worker drained)."""
    run_dir = Path(tempfile.mkdtemp(prefix="scaleserve-gateway-"))
    try:
        (run_dir / "metrics").mkdir()
        # read by prometheus_client when each spawned worker imports it
        os.environ[MULTIPROC_ENV] = str(run_dir / "metrics")
        return Supervisor(settings, run_dir).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
