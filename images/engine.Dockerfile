# syntax=docker/dockerfile:1
# The GPU engine: `scaleserve engine` on the official vLLM image (CUDA, the `vllm` wheel).
# It also runs `scaleserve gateway`, so it is the CRD's default image for both
# (ghcr.io/scaleserve/scaleserve). Build from the repository root:
#   docker build -f images/engine.Dockerfile -t ghcr.io/scaleserve/scaleserve:0.1.0 .
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- the scaleserve wheel (pure Python, any 3.11+ interpreter) -------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scaleserve scaleserve
COPY operator operator
COPY gateway gateway
COPY engine engine
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- vLLM's image plus scaleserve; vLLM and its dependencies keep the image's versions -------
FROM ${VLLM_IMAGE}
COPY requirements/lock.txt images/requirements/engine.txt images/requirements/gateway.txt images/constraints.py /tmp/build/
COPY --from=wheel /wheels/ /tmp/build/wheels/
RUN set -eu; export UV_BREAK_SYSTEM_PACKAGES=1 PIP_BREAK_SYSTEM_PACKAGES=1; \
    if command -v uv >/dev/null 2>&1; then install="uv pip install --system --no-cache"; \
    else install="python3 -m pip install --no-cache-dir"; fi; \
    python3 /tmp/build/constraints.py /tmp/build/lock.txt > /tmp/build/constraints.txt; \
    $install -c /tmp/build/constraints.txt -r /tmp/build/engine.txt -r /tmp/build/gateway.txt; \
    $install --no-deps /tmp/build/wheels/*.whl; \
    (cd / && scaleserve engine --help >/dev/null); \
    rm -rf /tmp/build; \
    useradd --uid 65532 --user-group --create-home --home-dir /home/scaleserve --shell /usr/sbin/nologin scaleserve
ENV HOME=/home/scaleserve \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /home/scaleserve
# gRPC (Engine service) and HTTP (/metrics, /healthz, /readyz): docs/contracts.md
EXPOSE 50051 9090
USER 65532:65532
# the liveness probe the operator writes: GET /healthz on port metrics (9090); loading a large
# model takes minutes, hence the long start period (the operator's startup probe allows 30 min)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30m --retries=6 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SCALESERVE_ENGINE_METRICS_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["scaleserve", "engine"]
