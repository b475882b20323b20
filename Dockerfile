# syntax=docker/dockerfile:1
# One image for the API, the worker and the emulator; the command picks the process:
#   docker run IMAGE api --host 0.0.0.0 --port 8080
#   docker run IMAGE worker --host 0.0.0.0 --metrics-port 9100
#   docker run IMAGE emulator --keys /var/lib/notifier/emulator --host 0.0.0.0 --port 8443
# The HEALTHCHECK probes /health on HEALTHCHECK_PORT (8080 by default; set 9100 for a
# worker, and HEALTHCHECK_PATH=/_emulator/health HEALTHCHECK_SCHEME=https for the emulator).

# -- build: wheels of the project and of its runtime dependencies (no dev extras) ---------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier ./notifier
COPY api ./api
COPY workers ./workers
COPY emulator ./emulator
RUN pip wheel --wheel-dir /wheels ".[emulator]"

# -- runtime: slim Python, the installed wheels, a non-root user -----------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMETHEUS_DISABLE_CREATED_SERIES=True \
    NOTIFIER_LOG_FORMAT=json \
    HEALTHCHECK_SCHEME=http \
    HEALTHCHECK_PORT=8080 \
    HEALTHCHECK_PATH=/health
RUN groupadd --system --gid 10001 notifier \
 && useradd --system --uid 10001 --gid notifier --home-dir /home/notifier --create-home \
      --shell /usr/sbin/nologin notifier \
 && install -d -o notifier -g notifier -m 0750 /var/lib/notifier /var/lib/notifier/emulator
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "notifier[emulator]"
USER notifier
WORKDIR /home/notifier
EXPOSE 8080 9100 8443
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,ssl,urllib.request as u; e=os.environ.get; u.urlopen(e('HEALTHCHECK_SCHEME','http')+'://127.0.0.1:'+e('HEALTHCHECK_PORT','8080')+e('HEALTHCHECK_PATH','/health'), timeout=3, context=ssl._create_unverified_context())"]
ENTRYPOINT ["notifier"]
CMD ["--help"]
