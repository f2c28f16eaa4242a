"""Gateway overhead, isolated: the gateway in front of a synthetic engine vs the engine direct.

A synthetic engine (benchmarks/synthetic_engine.py: the engine protocol, no model, tokens at a
fixed rate per stream) is reached two ways at each concurrency: directly with a gRPC client
(one long-lived channel, like the gateway's) and through `scaleserve gateway` with streaming
HTTP clients (aiohttp, /v1/completions). The differences are what the gateway adds:

- latency runs (a realistic per-stream rate; streams start at random offsets within one
  request's duration and each stream's first request is a warm-up, so arrivals are spread as
  in steady traffic): added TTFT p50/p99 and added TBT p50;
- saturation runs, two kinds: "burst" (the engine sends one token per message, unpaced, as fast
  as the reader takes them: the message-bound worst case) and "paced" (a fast fixed rate per
  stream, --saturation-rate, with deltas coalesced when the reader falls behind, as the real
  engine does): relayed tokens/s and SSE events/s of one gateway process, and the gateway's
  CPU seconds per 1k relayed tokens.

All processes (engine, gateway, load generator) share this machine's cores, as they would
share a node. Results: benchmarks/results/gateway_overhead.json.

    .venv/bin/python benchmarks/gateway_overhead.py
    .venv/bin/python benchmarks/gateway_overhead.py --concurrency 1,16,64 --quick

With --tracing it measures instead what request tracing costs the gateway: two gateways in front
of one synthetic engine, tracing off and tracing on (every request sampled, spans exported over
OTLP/HTTP to benchmarks/otlp_sink.py), driven alternately (off, on, off, on, ...) at each
concurrency of the latency runs; gateway CPU per request, TTFT and tokens/s side by side.
Results: benchmarks/results/gateway_tracing_overhead.json.

    .venv/bin/python benchmarks/gateway_overhead.py --tracing --concurrency 16,64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gateway_overhead.json"
TRACING_RESULTS = ROOT / "benchmarks" / "results" / "gateway_tracing_overhead.json"
PROMPT = "The gateway streams tokens to the client over server-sent events."
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its descendants (a gateway's workers), in seconds."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        ticks[child] = int(fields[11]) + int(fields[12])  # utime + stime
    tree, grew = {pid}, True
    while grew:
        more = {c for c, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(p, 0) for p in tree) / CLK_TCK


@dataclass
class Run:
    path: str  # "direct" or "gateway"
    mode: str  # "latency", "burst" or "paced"
    concurrency: int
    requests: int = 0
    tokens: int = 0
    events: int = 0
    errors: int = 0
    wall_s: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)
    tbt_ms: list[float] = field(default_factory=list)
    gateway_cpu_s: float = 0.0

    def record_event(
        self, t0: float, last: float | None, warm: bool, now: float | None = None
    ) -> float:
        """Count one stream event at `now`; its gap goes to TTFT or TBT unless warming up."""
        now = time.perf_counter() if now is None else now
        if warm:
            pass
        elif last is None:
            self.ttft_ms.append((now - t0) * 1000)
        else:
            self.tbt_ms.append((now - last) * 1000)
        self.events += 1
        return now

    def add(self, run: Run) -> None:
        """Pool another run's samples and totals into this one (rounds of one side)."""
        self.requests += run.requests
        self.tokens += run.tokens
        self.events += run.events
        self.errors += run.errors
        self.wall_s += run.wall_s
        self.gateway_cpu_s += run.gateway_cpu_s
        self.ttft_ms += run.ttft_ms
        self.tbt_ms += run.tbt_ms

    def summary(self) -> dict[str, float | int | str]:
        return {
            "path": self.path,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "tokens": self.tokens,
            "events": self.events,
            "wall_s": round(self.wall_s, 3),
            "ttft_p50_ms": round(pct(self.ttft_ms, 50), 3),
            "ttft_p99_ms": round(pct(self.ttft_ms, 99), 3),
            "tbt_p50_ms": round(pct(self.tbt_ms, 50), 4),
            "tbt_p99_ms": round(pct(self.tbt_ms, 99), 4),
            "tokens_per_s": round(self.tokens / self.wall_s, 1) if self.wall_s else 0.0,
            "events_per_s": round(self.events / self.wall_s, 1) if self.wall_s else 0.0,
            "gateway_cpu_s": round(self.gateway_cpu_s, 3),
            "gateway_cpu_s_per_1k_tokens": (
                round(self.gateway_cpu_s / self.tokens * 1000, 5) if self.tokens else 0.0
            ),
        }


# -- load generators ---------------------------------------------------------------------


async def direct_worker(
    stub, pb, run: Run, n: int, max_tokens: int, prompt_ids: list[int], jitter_s: float
) -> None:
    await asyncio.sleep(random.uniform(0, jitter_s))
    for i in range(n + 1):
        warm = i == 0  # the first request of each stream is not measured
        request = pb.GenerateRequest(
            request_id=os.urandom(8).hex(),
            prompt_token_ids=pb.TokenIds(ids=prompt_ids),
            sampling=pb.SamplingParams(max_tokens=max_tokens),
        )
        t0 = time.perf_counter()
        last = None
        try:
            async for msg in stub.Generate(request):
                last = run.record_event(t0, last, warm)
                run.tokens += len(msg.token_ids)
        except Exception:
            run.errors += 1
        run.requests += 1


async def gateway_worker(
    session, url: str, run: Run, n: int, max_tokens: int, model: str, jitter_s: float
) -> None:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    body["stream_options"] = {"include_usage": True}
    await asyncio.sleep(random.uniform(0, jitter_s))
    for i in range(n + 1):
        warm = i == 0  # the first request of each stream is not measured
        t0 = time.perf_counter()
        last = None
        try:
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    run.errors += 1
                    await resp.read()
                    continue
                async for line in resp.content:
                    if not line.startswith(b"data: {"):
                        continue
                    now = time.perf_counter()
                    if b'"usage":{' in line:
                        run.tokens += json.loads(line[6:])["usage"]["completion_tokens"]
                        continue
                    if b'"text":""' in line:
                        continue  # the finish frame
                    last = run.record_event(t0, last, warm, now)
        except Exception:
            run.errors += 1
        run.requests += 1


async def measure(
    path: str,
    mode: str,
    concurrency: int,
    per_worker: int,
    max_tokens: int,
    engine_addr: str,
    gateway_url: str,
    gateway_pid: int,
    model: str,
    jitter_s: float,
) -> Run:
    import aiohttp
    import grpc

    from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc

    run = Run(path, mode, concurrency)
    if path == "direct":
        async with grpc.aio.insecure_channel(engine_addr) as channel:
            stub = engine_pb2_grpc.EngineStub(channel)
            await channel.channel_ready()
            prompt_ids = list(range(1, 15))
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    direct_worker(
                        stub, engine_pb2, run, per_worker, max_tokens, prompt_ids, jitter_s
                    )
                    for _ in range(concurrency)
                )
            )
            run.wall_s = time.perf_counter() - start
        return run
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # warm the connection pool so TTFT does not include TCP connects
        await asyncio.gather(*(session.get(gateway_url + "/healthz") for _ in range(concurrency)))
        cpu0 = cpu_seconds(gateway_pid)
        start = time.perf_counter()
        await asyncio.gather(
            *(
                gateway_worker(
                    session,
                    gateway_url + "/v1/completions",
                    run,
                    per_worker,
                    max_tokens,
                    model,
                    jitter_s,
                )
                for _ in range(concurrency)
            )
        )
        run.wall_s = time.perf_counter() - start
        run.gateway_cpu_s = cpu_seconds(gateway_pid) - cpu0
    return run


# -- processes ---------------------------------------------------------------------------


def start(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        process_group=0,  # the driver's session: one CPU share for all (docs/benchmarks.md)
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def synthetic(port: int, rate: float) -> subprocess.Popen[bytes]:
    return start(
        [
            sys.executable,
            "benchmarks/synthetic_engine.py",
            "--port",
            str(port),
            "--tokens-per-s",
            str(rate),
            "--uvloop",
        ]
    )


def start_gateway(
    port: int,
    engine_port: int,
    *limits: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
    tree: str = "",
) -> subprocess.Popen[bytes]:
    """`scaleserve gateway` on `port` in front of the synthetic engine on `engine_port`, with the
    admission flags in `limits`; from `tree` (another checkout) when given."""
    return start(
        [
            sys.executable,
            "-m",
            "scaleserve",
            "gateway",
            "--port",
            str(port),
            "--internal-port",
            str(free_port()),
            "--replicas",
            f"127.0.0.1:{engine_port}",
            *limits,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        {**(env or {}), "PYTHONPATH": str(Path(tree).resolve())} if tree else env,
        Path(tree).resolve() if tree else ROOT,  # `-m` looks in the working directory first
    )


@dataclass(frozen=True)
class Variant:
    """One gateway under test: `label=workers[@tree][+NAME=VALUE...]` on the command line; a
    tree (another checkout, e.g. the main branch for "before") runs that tree's code."""

    label: str
    workers: int
    tree: str = ""
    env: tuple[tuple[str, str], ...] = ()
    cpus: frozenset[int] = frozenset()  # the gateway's own CPUs (--gateway-cpus); empty: shared

    @classmethod
    def parse(cls, spec: str) -> Variant:
        label, _, rest = spec.partition("=")
        rest, *env = rest.split("+")
        workers, _, tree = rest.partition("@")
        pairs = tuple(tuple(e.split("=", 1)) for e in env)
        return cls(label, int(workers), tree, pairs)  # type: ignore[arg-type]

    def start(self, port: int, engine_port: int) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        gateway = start_gateway(
            port,
            engine_port,
            "--max-concurrency",
            "0",
            workers=self.workers,
            env=env,
            tree=self.tree,
        )
        if self.cpus:  # before its imports end, so workers it spawns inherit the CPUs
            os.sched_setaffinity(gateway.pid, self.cpus)
        return gateway


def merge(runs: list[Run]) -> Run:
    """Rounds of one variant at one level as one run (samples pooled, totals added)."""
    out = Run(runs[0].path, runs[0].mode, runs[0].concurrency)
    for r in runs:
        out.add(r)
    return out


def print_tables(args: argparse.Namespace, table: list[dict], saturation: list[dict]) -> None:
    print(f"\nlatency runs: {args.rate:g} tokens/s per stream, {args.tokens} tokens per request")
    print(
        f"{'gateway':>14} {'conc':>5} {'+TTFT p50':>10} {'+TTFT p99':>10} {'+TBT p50':>10} "
        f"{'tok/s':>8} {'cpu ms/1k tok':>14} {'err':>4}"
    )
    for r in table:
        print(
            f"{r['gateway']:>14} {r['concurrency']:>5} {r['added_ttft_p50_ms']:>8.3f}ms "
            f"{r['added_ttft_p99_ms']:>8.3f}ms "
            f"{r['added_tbt_p50_ms']:>8.4f}ms {r['gateway_tokens_per_s']:>8.0f} "
            f"{r['gateway_cpu_s_per_1k_tokens'] * 1000:>14.1f} {r['errors']:>4}"
        )
    print(
        f"\nsaturation runs: {args.saturation_tokens} tokens per request; burst: one token per "
        f"message, unpaced; paced: {args.saturation_rate:g} tokens/s/stream, coalesced when behind"
    )
    print(
        f"{'gateway':>14} {'kind':>6} {'conc':>5} {'direct tok/s':>13} {'gateway tok/s':>14} "
        f"{'events/s':>9} {'tok/event':>9} {'cpu ms/1k tok':>14} {'gw cpu':>7}"
    )
    for r in saturation:
        print(
            f"{r['gateway']:>14} {r['kind']:>6} {r['concurrency']:>5} "
            f"{r['direct_tokens_per_s']:>13.0f} "
            f"{r['gateway_tokens_per_s']:>14.0f} {r['gateway_events_per_s']:>9.0f} "
            f"{r['tokens_per_event']:>9.2f} {r['gateway_cpu_s_per_1k_tokens'] * 1000:>14.1f} "
            f"{r['gateway_cpu_utilisation']:>7.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,16,64,128,256")
    parser.add_argument("--rate", type=float, default=200.0, help="latency runs: tokens/s/stream")
    parser.add_argument("--tokens", type=int, default=32, help="latency runs: tokens per request")
    parser.add_argument("--min-requests", type=int, default=128, help="latency runs, per level")
    parser.add_argument("--saturation", default="64,256", help="concurrency of saturation runs")
    parser.add_argument("--saturation-tokens", type=int, default=1024)
    parser.add_argument(
        "--saturation-rate", type=float, default=1000.0, help="paced runs: tokens/s/stream"
    )
    parser.add_argument(
        "--workers", default="1", help="gateway worker counts to compare, side by side (1,2)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument(
        "--tracing", action="store_true", help="measure tracing off vs on instead (A/B)"
    )
    parser.add_argument(
        "--gateways",
        default="",
        help="gateways to compare instead of --workers: label=workers[@tree][+NAME=VALUE], "
        "comma-separated (before=1@/path/to/main,after=1)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternations of the gateways at each level"
    )
    parser.add_argument(
        "--gateway-cpus",
        default="",
        help="CPUs for the gateways alone (e.g. 1); the driver and the synthetic engine get the "
        "others: the gateway's cost without contention, as in a pod with its own cores",
    )
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument(
        "--conditions",
        default="shared 2-core machine; synthetic engine and load generator on the same cores",
        help="how the figures were taken (written with them)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c]
    sat_levels = [int(c) for c in args.saturation.split(",") if c]
    variants = [Variant.parse(v) for v in args.gateways.split(",") if v] or [
        Variant(f"w{w}", int(w)) for w in args.workers.split(",") if w
    ]
    if args.gateway_cpus:
        cpus = frozenset(int(c) for c in args.gateway_cpus.split(","))
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - cpus)  # the engine inherits
        variants = [replace(v, cpus=cpus) for v in variants]
    labels = [v.label for v in variants]
    if args.quick:
        args.min_requests = 32
        args.saturation_tokens = 256

    load_before = [round(x, 1) for x in os.getloadavg()]
    print(f"load average before: {load_before}", file=sys.stderr)
    if args.tracing:
        from gateway_tracing_ab import tracing_ab

        ab = tracing_ab(args, levels)
        write(args.output if args.output != str(RESULTS) else TRACING_RESULTS, ab, load_before)
        return 0

    import uvloop

    results: list[dict[str, float | int | str]] = []
    rounds: dict[tuple[str, str, int], list[Run]] = {}
    modes = (("latency", args.rate), ("burst", 0.0), ("paced", args.saturation_rate))
    for mode, rate in modes:
        engine_port = free_port()
        engine = synthetic(engine_port, rate)
        gateways = {
            v.label: (port, v.start(port, engine_port))
            for v, port in ((v, free_port()) for v in variants)
        }
        try:
            for port, _ in gateways.values():
                wait_http(f"http://127.0.0.1:{port}/readyz")
            for c in levels if mode == "latency" else sat_levels:
                if mode == "latency":
                    per_worker = max(2, -(-args.min_requests // c))
                    tokens = args.tokens
                else:
                    per_worker, tokens = 1, args.saturation_tokens
                for k in range(args.rounds):
                    # A/B: the gateways' order alternates from one round to the next
                    order = labels if k % 2 == 0 else labels[::-1]
                    for label in [None, *order]:
                        path = "direct" if label is None else label
                        port, gateway = gateways[label or labels[0]]
                        run = uvloop.run(
                            measure(
                                path,
                                mode,
                                c,
                                per_worker,
                                tokens,
                                f"127.0.0.1:{engine_port}",
                                f"http://127.0.0.1:{port}",
                                gateway.pid,
                                "synthetic",
                                tokens / rate if mode == "latency" else 0.0,
                            )
                        )
                        rounds.setdefault((mode, path, c), []).append(run)
                        results.append({**run.summary(), "round": k})
                        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        finally:
            for _, gateway in gateways.values():
                stop(gateway)
            stop(engine)
    runs = {key: merge(rs) for key, rs in rounds.items()}

    table = []
    for label in labels:
        for c in levels:
            d, g = runs[("latency", "direct", c)], runs[("latency", label, c)]
            table.append(
                {
                    "gateway": label,
                    "concurrency": c,
                    "added_ttft_p50_ms": round(pct(g.ttft_ms, 50) - pct(d.ttft_ms, 50), 3),
                    "added_ttft_p99_ms": round(pct(g.ttft_ms, 99) - pct(d.ttft_ms, 99), 3),
                    "added_tbt_p50_ms": round(pct(g.tbt_ms, 50) - pct(d.tbt_ms, 50), 4),
                    "gateway_tokens_per_s": round(g.tokens / g.wall_s, 1),
                    "gateway_cpu_s_per_1k_tokens": round(
                        g.gateway_cpu_s / max(1, g.tokens) * 1000, 4
                    ),
                    "errors": d.errors + g.errors,
                }
            )
    saturation = []
    for label in labels:
        for kind in ("burst", "paced"):
            for c in sat_levels:
                d, g = runs[(kind, "direct", c)], runs[(kind, label, c)]
                saturation.append(
                    {
                        "gateway": label,
                        "kind": kind,
                        "concurrency": c,
                        "direct_tokens_per_s": round(d.tokens / d.wall_s, 1),
                        "gateway_tokens_per_s": round(g.tokens / g.wall_s, 1),
                        "gateway_events_per_s": round(g.events / g.wall_s, 1),
                        "tokens_per_event": round(g.tokens / max(1, g.events), 2),
                        "gateway_cpu_s_per_1k_tokens": round(
                            g.gateway_cpu_s / max(1, g.tokens) * 1000, 4
                        ),
                        "gateway_cpu_utilisation": round(g.gateway_cpu_s / g.wall_s, 2),
                        "errors": d.errors + g.errors,
                    }
                )
    print_tables(args, table, saturation)
    out = {
        "latency": {"rate_tokens_per_s": args.rate, "tokens": args.tokens, "rows": table},
        "saturation": {
            "tokens": args.saturation_tokens,
            "paced_rate_tokens_per_s": args.saturation_rate,
            "rows": saturation,
        },
        "gateways": [
            {
                "label": v.label,
                "workers": v.workers,
                "tree": v.tree,
                "env": dict(v.env),
                "cpus": sorted(v.cpus),
            }
            for v in variants
        ],
        "conditions": args.conditions,
        "runs": results,
    }
    write(args.output, out, load_before)
    return 0


def write(output: str | Path, results: dict, load_before: list[float]) -> None:
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 1) for x in os.getloadavg()],
        },
        **results,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    sys.exit(main())
