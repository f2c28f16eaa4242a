# syntax=docker/dockerfile:1
# The operator: `scaleserve operator` (kopf). Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/scaleserve/scaleserve-operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- the scaleserve wheel (one package; the component folders are linked into it) ------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scaleserve scaleserve
COPY operator operator
COPY gateway gateway
COPY engine engine
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- a virtual environment with the operator's packages, pinned by requirements/lock.txt ------
FROM ${PYTHON_IMAGE} AS venv
RUN python -m venv /opt/scaleserve
COPY requirements/lock.txt images/requirements/operator.txt images/constraints.py /tmp/build/
RUN /opt/scaleserve/bin/python /tmp/build/constraints.py /tmp/build/lock.txt > /tmp/build/constraints.txt \
 && /opt/scaleserve/bin/pip install --no-cache-dir -c /tmp/build/constraints.txt -r /tmp/build/operator.txt
COPY --from=wheel /wheels/ /tmp/wheels/
# the engine and gateway packages stay out: their modules import packages this image lacks, and
# `scaleserve` lists only the subcommands whose component is present
RUN /opt/scaleserve/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
 && site="$(cd / && /opt/scaleserve/bin/python -I -c 'import os, scaleserve.version as v; print(os.path.dirname(v.__file__))')" \
 && rm -rf "$site/engine" "$site/gateway" \
 && cd / && /opt/scaleserve/bin/scaleserve operator --help >/dev/null

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
COPY --from=venv /opt/scaleserve /opt/scaleserve
ENV PATH=/opt/scaleserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCALESERVE_OPERATOR_LIVENESS_PORT=8080 \
    SCALESERVE_OPERATOR_METRICS_PORT=9090
# kopf's /healthz, the port the chart probes (operator.healthPort); Prometheus /metrics
EXPOSE 8080 9090
USER 65532:65532
HEALTHCHECK --interval=20s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['SCALESERVE_OPERATOR_LIVENESS_PORT'], timeout=4)"]
ENTRYPOINT ["scaleserve", "operator"]
