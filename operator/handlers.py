"""kopf wiring: the handlers only fetch the object, call reconcile, and map errors at the edge."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import kopf

from scaleserve.operator import informer
from scaleserve.operator.cluster import ClusterView
from scaleserve.operator.concurrency import Windows, endpoint_key
from scaleserve.operator.errors import ChildRejectedError, ClusterError, InvalidSpecError
from scaleserve.operator.kube import Kube
from scaleserve.operator.metrics import OperatorMetrics, serve
from scaleserve.operator.reconcile import reconcile
from scaleserve.operator.runtime import Emit, Runtime
from scaleserve.operator.settings import OperatorSettings
from scaleserve.operator.triggers import EventPoster, Post, Requeue

GROUP, VERSION, PLURAL = "scaleserve.io", "v1alpha1", "llmendpoints"
RETRY_DELAY_S = 5.0


log = logging.getLogger("scaleserve.operator")


def _emitter(
    body: kopf.Body | dict[str, Any], metrics: OperatorMetrics, post: Post | None = None
) -> Emit:
    where = f"{body['metadata']['namespace']}/{body['metadata']['name']}"

    def emit(kind: str, reason: str, message: str) -> None:
        metrics.events.labels(kind, reason).inc()
        log.log(
            logging.WARNING if kind == "Warning" else logging.INFO,
            "%s %s: %s",
            where,
            reason,
            message,
        )
        if post is None and isinstance(body, kopf.Body):
            kopf.event(body, type=kind, reason=reason, message=message)
        elif post is not None:
            post(body, kind, reason, message)  # outside kopf's handlers

    return emit


async def _reconcile(
    runtime: Runtime,
    body: kopf.Body | dict[str, Any],
    logger: Any,
    *,
    full_apply: bool,
    retry: bool,
    post: Post | None = None,
) -> None:
    metrics = runtime.metrics
    started = time.perf_counter()
    outcome = "error"
    try:
        await reconcile(runtime, body, _emitter(body, metrics, post), full_apply=full_apply)
        outcome = "ok"
    except InvalidSpecError as exc:
        outcome = "invalid"
        if retry:
            raise kopf.PermanentError(str(exc)) from exc
        log.debug("%s: invalid spec: %s", body["metadata"]["name"], exc)
    except ChildRejectedError as exc:
        if retry:  # exponential back-off with jitter, capped at 5 min (runtime.backoff_s)
            raise kopf.TemporaryError(str(exc), delay=exc.delay_s) from exc
        logger.warning("children refused, retrying in %.0fs: %s", exc.delay_s, exc)
    except ClusterError as exc:
        if retry:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
        logger.warning("reconcile failed, retrying on the next tick: %s", exc)
    finally:
        metrics.reconciles.labels(outcome).inc()
        metrics.reconcile_duration.observe(time.perf_counter() - started)


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    """A registry holding the operator's handlers, configured by `config` (no globals)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # an explicit registry carries none of kopf's default login handlers
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(memo: kopf.Memo, **_: Any) -> None:
        kube = await Kube.connect(config.field_manager)
        timeout = aiohttp.ClientTimeout(total=config.stats_timeout_s)
        runtime = Runtime(config, kube, aiohttp.ClientSession(timeout=timeout), Windows())
        events = EventPoster(kube)

        async def promptly(body: dict[str, Any]) -> None:
            await _reconcile(runtime, body, log, full_apply=False, retry=False, post=events.post)

        requeue = Requeue(kube, promptly)
        # reconciles read watched caches; a child's readiness change reconciles its endpoint
        runtime.view = ClusterView(
            kube, config.namespaces, requeue.add, lambda ns, name: runtime.dirty.add((ns, name))
        )
        tasks = await informer.start(runtime.view.informers)
        tasks.append(asyncio.create_task(requeue.run(), name="requeue"))
        memo["runtime"], memo["events"], memo["tasks"] = runtime, events, tasks
        if config.metrics_port:
            memo["metrics_server"] = await serve(runtime.metrics.registry, config.metrics_port)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await informer.stop(memo.get("tasks") or [])
        metrics_server = memo.get("metrics_server")
        if metrics_server is not None:
            await metrics_server.cleanup()
        events: EventPoster | None = memo.get("events")
        if events is not None:
            await events.close()
        runtime: Runtime | None = memo.get("runtime")
        if runtime is not None:
            await runtime.http.close()
            await runtime.kube.close()

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="apply", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="apply", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="apply", field="spec", registry=registry)
    async def apply(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await _reconcile(memo["runtime"], body, logger, full_apply=True, retry=True)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=config.reconcile_interval_s,
        # create/resume have just reconciled: the first tick can wait a whole interval
        initial_delay=config.reconcile_interval_s,
        id="reconcile",
        sharp=False,
        registry=registry,
    )
    async def tick(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await _reconcile(memo["runtime"], body, logger, full_apply=False, retry=False)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="forget", optional=True, registry=registry)
    async def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # children go with the owner (ownerReferences); only in-memory state is dropped here
        runtime: Runtime | None = memo.get("runtime")
        if runtime is not None:
            meta = body["metadata"]
            runtime.windows.reset(endpoint_key(meta))
            runtime.metrics.forget(meta["namespace"], meta["name"])
            runtime.forget((meta["namespace"], meta["name"]))

    return registry


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # The CRD's status schema is structural: kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="scaleserve.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="scaleserve.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "scaleserve.io/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings


async def run(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until `stop_flag` is set (or forever)."""
    liveness = (
        f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    )
    await kopf.operator(
        registry=build_registry(settings),
        settings=kopf_settings(),
        standalone=True,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness,
        memo=kopf.Memo(),
    )
