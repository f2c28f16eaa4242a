"""Leader election: at most one operator acts at a time, through a coordination.k8s.io Lease.

The Lease is held around the whole kopf run, so a standby does nothing but wait for it: no
watches, no timers, no startup handlers. (kopf's peering pauses an operator in favour of one of
higher priority, but pauses all of them when two share a priority, as the replicas of one
Deployment do, and runs their startup handlers meanwhile.) kubernetes_asyncio's LeaderElection
renews the Lease; the timings are client-go's defaults.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from scaleserve.operator.settings import OperatorSettings

LEASE_DURATION_S = 15  # a standby takes over this long after the leader's last renewal
RENEW_DEADLINE_S = 10  # a leader that could not renew for this long stops acting ...
STOP_GRACE_S = 3  # ... and exits at the latest this much later, before the Lease expires
RETRY_PERIOD_S = 2

Operate = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

log = logging.getLogger("scaleserve.operator.leader")


def identity() -> str:
    # the pod's name, and the process: a restarted container of the same pod (its old process
    # gone) takes its Lease back at once; two processes on one host stay apart
    return f"{socket.gethostname()}_{os.getpid()}"


async def run_elected(settings: OperatorSettings, operate: Operate) -> None:
    """`operate(stop_flag)` while this process holds settings.leader_lease; without a lease
    configured, at once. Returns when `operate` does (the Lease is then released)."""
    if not settings.leader_lease:
        await operate(asyncio.Event())
        return
    namespace, name = settings.leader_lease.split("/")
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    async with client.ApiClient() as api:
        me = identity()
        election = LeaderElection(
            Config(
                LeaseLock(name, namespace, me, api),
                LEASE_DURATION_S,
                RENEW_DEADLINE_S,
                RETRY_PERIOD_S,
                onstarted_leading=_noop,
                onstopped_leading=_noop,
            )
        )
        campaign = asyncio.create_task(election.run(), name="leader election")
        try:
            await _stand_by(election, campaign, me, settings)
            log.info("%s leads (Lease %s)", me, settings.leader_lease)
            await _lead(election, campaign, me, operate)
        finally:
            campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
        await _release(api, namespace, name, me)


async def _noop() -> None:
    return None


def _holds(election: LeaderElection, me: str) -> bool:
    record = election.observed_record
    return record is not None and record.holder_identity == me


async def _stand_by(
    election: LeaderElection, campaign: asyncio.Task[None], me: str, settings: OperatorSettings
) -> None:
    """Wait for the Lease, answering /healthz meanwhile (kopf serves it once leading)."""
    log.info("%s stands by for Lease %s", me, settings.leader_lease)
    health = await _serve_health(settings.liveness_port) if settings.liveness_port else None
    try:
        while not _holds(election, me):
            if campaign.done():
                campaign.result()  # raises what ended it
                raise RuntimeError("leader election ended before the Lease was held")
            await asyncio.sleep(0.2)
    finally:
        if health is not None:
            await health.cleanup()


async def _lead(
    election: LeaderElection, campaign: asyncio.Task[None], me: str, operate: Operate
) -> None:
    """Run `operate` until it returns, or stop it when the Lease can no longer be renewed."""
    stop = asyncio.Event()
    work = asyncio.create_task(operate(stop), name="operator")
    while not work.done():
        renewed_s = time.time() - election.observed_time_milliseconds / 1000
        if campaign.done() or not _holds(election, me) or renewed_s > RENEW_DEADLINE_S:
            log.error("%s lost the Lease (last renewed %.0f s ago): stopping", me, renewed_s)
            stop.set()
            done, _ = await asyncio.wait({work}, timeout=STOP_GRACE_S)
            if not done:  # another operator may act soon: never overlap with it
                log.error("the operator did not stop in %d s: exiting", STOP_GRACE_S)
                os._exit(1)
            raise RuntimeError("lost the leader election Lease")
        await asyncio.wait({work}, timeout=0.5)
    work.result()


async def _release(api: client.ApiClient, namespace: str, name: str, me: str) -> None:
    """Give the Lease up on a clean exit, so a standby takes over within its retry period."""
    leases = client.CoordinationV1Api(api)
    try:
        lease = await leases.read_namespaced_lease(name, namespace)
        if lease.spec.holder_identity != me:
            return
        lease.spec = client.V1LeaseSpec(lease_duration_seconds=1)  # held by no one
        await leases.replace_namespaced_lease(name, namespace, lease)
        log.info("%s released Lease %s/%s", me, namespace, name)
    except ApiException as exc:  # it expires on its own
        log.warning("could not release Lease %s/%s: %s", namespace, name, exc.reason)


async def _serve_health(port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
