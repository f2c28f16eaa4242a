"""kopf wiring: the handlers only fetch the object, call reconcile, and map errors at the edge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import aiohttp
import kopf

from scaleserve.operator import cluster
from scaleserve.operator.builders import LABEL_ENDPOINT
from scaleserve.operator.cluster import ENGINE_LABELS, GATEWAY_LABELS, MANAGED, ClusterView
from scaleserve.operator.concurrency import Windows, endpoint_key
from scaleserve.operator.errors import ChildRejectedError, ClusterError, InvalidSpecError
from scaleserve.operator.kube import Kube
from scaleserve.operator.leader import identity
from scaleserve.operator.metrics import OperatorMetrics, serve
from scaleserve.operator.reconcile import reconcile
from scaleserve.operator.runtime import Emit, Runtime
from scaleserve.operator.settings import OperatorSettings

GROUP, VERSION, PLURAL = "scaleserve.io", "v1alpha1", "llmendpoints"
RETRY_DELAY_S = 5.0
COALESCE_S = 0.2
INDEXES = ("engines", "gateways", "endpoint_pods", "gpu_pods", "nodes")
ENDPOINT_PODS = {LABEL_ENDPOINT: kopf.PRESENT}
WORKLOADS = ("StatefulSet", "Deployment")
# what kopf's diff base drops, and keeps of the metadata (ownerReferences name its keys)
DROPPED = ("metadata", "status")
KEPT_METADATA = ("labels", "annotations", "ownerReferences")
CONFIG_CHILDREN = (
    ("", "v1", "services"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)


log = logging.getLogger("scaleserve.operator")


def _emitter(body: kopf.Body, metrics: OperatorMetrics) -> Emit:
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
        kopf.event(body, type=kind, reason=reason, message=message)

    return emit


async def _reconcile(
    runtime: Runtime,
    body: kopf.Body,
    logger: Any,
    *,
    full_apply: bool,
    retry: bool,
) -> None:
    metrics = runtime.metrics
    started = time.perf_counter()
    outcome = "error"
    try:
        await reconcile(runtime, body, _emitter(body, metrics), full_apply=full_apply)
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


def _watch_children(registry: kopf.OperatorRegistry) -> None:
    """kopf watches what reconciles read, into its indexes (cluster.py says what each holds),
    and wakes an endpoint's daemon when one of its children changes what its status depends
    on, so `Ready` and the next step of a reshape do not wait for the interval, or when a child
    is deleted or changed by someone else, so it is repaired at once (drift.py)."""
    indexes: list[tuple[tuple[str, str, str], str, Any, dict[str, Any] | None]] = [
        (("apps", "v1", "statefulsets"), "engines", cluster.engines_index, ENGINE_LABELS),
        (("apps", "v1", "deployments"), "gateways", cluster.gateways_index, GATEWAY_LABELS),
        (("", "v1", "pods"), "endpoint_pods", cluster.endpoint_pods_index, ENDPOINT_PODS),
        # every bound pod may hold GPUs on a node the operator places groups on
        (("", "v1", "pods"), "gpu_pods", cluster.gpu_pods_index, None),
        (("", "v1", "nodes"), "nodes", cluster.nodes_index, None),
    ]
    for (group, version, plural), name, fn, labels in indexes:

        async def index(body: kopf.Body, fn: Any = fn, **_: Any) -> Any:
            return fn(body)  # async: kopf runs sync handlers in threads

        kopf.index(group, version, plural, id=name, labels=labels, registry=registry)(index)

    async def child(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = memo.get("runtime")
        owner = cluster.endpoint_of(body)
        if runtime is None or owner is None:
            return
        deleted = type == "DELETED"
        drifted = runtime.drift.seen(body, deleted=deleted)
        kind = body.get("kind", "")
        readiness = kind in WORKLOADS and runtime.cluster.child_event(kind, type, body)
        if drifted:
            runtime.dirty.add(owner)  # the next pass re-applies what drifted
        if type is not None and (drifted or readiness):
            wake = runtime.wakes.get(owner)  # none once the endpoint is gone
            if wake is not None:
                wake.set()

    kopf.on.event(
        "apps", "v1", "statefulsets", id="engine", labels=ENGINE_LABELS, registry=registry
    )(child)
    kopf.on.event(
        "apps", "v1", "deployments", id="gateway", labels=GATEWAY_LABELS, registry=registry
    )(child)
    # the other children: only for drift repair (a deleted or edited one is repaired at once)
    for group, version, plural in CONFIG_CHILDREN:
        kopf.on.event(
            group, version, plural, id=f"child-{plural}", labels=MANAGED, registry=registry
        )(child)


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    """A registry holding the operator's handlers, configured by `config` (no globals)."""
    registry = kopf.OperatorRegistry()
    _watch_children(registry)
    _activities(registry, config)
    _endpoint_handlers(registry, config)
    return registry


def _activities(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Log-in, and the runtime the handlers share: made at start-up, closed at clean-up."""

    @kopf.on.login(id="login", registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # an explicit registry carries none of kopf's default login handlers. The configuration
        # of the operator's own client (kubernetes_asyncio): in a pod, the ServiceAccount and
        # KUBERNETES_SERVICE_HOST/PORT, as every client library does; else the kubeconfig.
        # (kopf's login_with_service_account names https://kubernetes.default.svc: DNS only)
        info: kopf.ConnectionInfo | None = await kopf.login_via_async_client(**kwargs)
        return info

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(memo: kopf.Memo, **kwargs: Any) -> None:
        kube = await Kube.connect(config.field_manager)
        timeout = aiohttp.ClientTimeout(total=config.stats_timeout_s)
        runtime = Runtime(config, kube, aiohttp.ClientSession(timeout=timeout), Windows())
        # kopf's indexes, by their handlers' ids (kopf fills them before any endpoint handler)
        runtime.view = ClusterView({name: kwargs[name] for name in INDEXES})
        memo["runtime"] = runtime
        if config.metrics_port:
            memo["metrics_server"] = await serve(runtime.metrics.registry, config.metrics_port)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        metrics_server = memo.get("metrics_server")
        if metrics_server is not None:
            await metrics_server.cleanup()
        runtime: Runtime | None = memo.get("runtime")
        if runtime is not None:
            await runtime.http.close()
            await runtime.kube.close()


def _endpoint_handlers(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """An endpoint's passes: at once on create, resume and spec change, then from its daemon
    every interval or when a child wakes it; its in-memory state is dropped on delete."""

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="apply", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="apply", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="apply", field="spec", registry=registry)
    async def apply(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        runtime: Runtime = memo["runtime"]
        runtime.wake(_key(body))  # children's changes wake the daemon from now on
        await _reconcile(runtime, body, logger, full_apply=True, retry=True)

    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="reconcile",
        # a pass still running when the endpoint goes or the operator stops is cancelled
        cancellation_backoff=1.0,
        cancellation_timeout=5.0,
        registry=registry,
    )
    async def passes(
        body: kopf.Body, memo: kopf.Memo, logger: Any, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        # one pass per interval, or at once when a child's change wakes it; create/resume
        # have just reconciled, so the first pass waits
        runtime: Runtime = memo["runtime"]
        wake = runtime.wake(_key(body))
        while not stopped:
            await _sleep(wake, stopped, config.reconcile_interval_s)
            if stopped:
                return
            if wake.is_set():
                await asyncio.sleep(COALESCE_S)  # a burst of child changes makes one pass
                wake.clear()
            await _reconcile(runtime, body, logger, full_apply=False, retry=False)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="forget", optional=True, registry=registry)
    async def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # children go with the owner (ownerReferences); only in-memory state is dropped here
        runtime: Runtime | None = memo.get("runtime")
        if runtime is not None:
            meta = body["metadata"]
            runtime.windows.reset(endpoint_key(meta))
            runtime.metrics.forget(meta["namespace"], meta["name"])
            runtime.forget((meta["namespace"], meta["name"]))


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout_s: float) -> None:
    """Until `wake` is set, the daemon is stopped, or `timeout_s` has passed."""
    waits = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def _key(body: kopf.Body) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


class LeanDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base of an endpoint (what tells kopf that the spec changed), built from the
    fields it keeps: kopf's own build deep-copies the whole body, status and managedFields
    included, only to drop them, on every event of every endpoint (a tenth of the operator's
    CPU while 1,000 endpoints converge). The result is the same."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        fields = [f.split(".") if isinstance(f, str) else f for f in extra_fields or ()]
        if any(f and f[0] in DROPPED for f in fields):  # a field kopf restores from these
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        lean = {k: v for k, v in body.items() if k not in DROPPED}
        lean["metadata"] = {k: meta[k] for k in KEPT_METADATA if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=extra_fields)


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # The CRD's status schema is structural: kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="scaleserve.io")
    settings.persistence.diffbase_storage = LeanDiffBase(
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
        # kopf's own default asks the passwd database for the user's name, which the image's
        # non-root uid need not have (getpwuid() fails in a pod running as uid 65532)
        identity=identity(),  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
    )
