# Runledger server (ingest + projector + query in one process) for use against an external
# Kafka broker: `runledger serve` needs KAFKA_BOOTSTRAP_SERVERS (compose.yaml sets it).
# Pinned: the base image by its full version, the Python dependencies by constraints.txt.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what `pip install .` needs (the client distribution it depends on, pyproject.toml, README.md and the
# server's packages), so tests, benchmarks and local data never enter the image.
COPY client/ client/
COPY pyproject.toml README.md constraints.txt ./
COPY ingest/ ingest/
COPY projector/ projector/
COPY query/ query/
COPY runledger/ runledger/
RUN pip install -c constraints.txt ./client . && rm -rf /src

# Unprivileged user; /data is created and chowned *before* VOLUME so a fresh named volume
# inherits this ownership (changes after VOLUME would be discarded).
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home runledger \
    && mkdir -p /data && chown runledger:runledger /data
WORKDIR /data
USER runledger

# Listen on all interfaces inside the container (the default, 127.0.0.1, is unreachable
# through a port mapping); DuckDB read model and artifacts live under /data.
ENV RUNLEDGER_HOST=0.0.0.0 \
    RUNLEDGER_DATA_DIR=/data
VOLUME /data
EXPOSE 5000

# Readiness, not liveness: /health/ready answers 503 while Kafka is unreachable or the read
# model is still catching up with the log (docs/openapi.md). No curl in the slim image: python's
# urllib raises on a 503, which fails the check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('RUNLEDGER_PORT', '5000'), timeout=4)"]

CMD ["runledger", "serve"]
