# syntax=docker/dockerfile:1
# The gateway: `scaleserve gateway` (OpenAI API over pooled gRPC to the engines). No vLLM, no
# torch: tokenizers only. Build from the repository root:
#   docker build -f images/gateway.Dockerfile -t ghcr.io/scaleserve/scaleserve-gateway:0.1.0 .
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
RUN python -m venv /opt/scaleserve
COPY requirements/lock.txt images/requirements/gateway.txt images/constraints.py /tmp/build/
RUN /opt/scaleserve/bin/python /tmp/build/constraints.py /tmp/build/lock.txt > /tmp/build/constraints.txt \
 && /opt/scaleserve/bin/pip install --no-cache-dir -c /tmp/build/constraints.txt -r /tmp/build/gateway.txt
COPY --from=wheel /wheels/ /tmp/wheels/
RUN /opt/scaleserve/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
 && cd / && /opt/scaleserve/bin/scaleserve gateway --help >/dev/null

FROM ${PYTHON_IMAGE}
COPY --from=venv /opt/scaleserve /opt/scaleserve
ENV PATH=/opt/scaleserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# HTTP: the OpenAI API, /healthz, /readyz on 8000; /stats, /metrics, /livez on the internal
# port 8001 (docs/contracts.md)
EXPOSE 8000 8001
USER 65532:65532
# the liveness probe the operator writes: GET /livez on port internal (8001)
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('SCALESERVE_GATEWAY_INTERNAL_PORT', '8001'), timeout=4)"]
ENTRYPOINT ["scaleserve", "gateway"]
