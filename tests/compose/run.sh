#!/usr/bin/env bash
# The offline compose test (`make compose-test`, issue 13): docker-compose.yml's production
# shape built from local material only, brought up scaled, hit with load while containers die,
# then taken down. Steps:
#   1. a Docker engine: the one at DOCKER_HOST (or the default socket) if it answers, else a
#      private dockerd started here (own socket, data root and exec root) and stopped at the end;
#   2. base images without a registry: a Debian bookworm root filesystem (debootstrap, the
#      mirror apt uses) imported as an image, plus a Python image on top holding CPython 3.11
#      and a wheelhouse of requirements.lock, so the Dockerfile's own `pip install` runs offline;
#   3. tests/compose/scenario.py: up with --scale render=4 --scale feed=2 and
#      deploy/compose/offline.yml, the checks, `down -v`.
# Cached between runs (keyed by the package list, the lock's hash and this script's version):
# the root filesystem tarball and the wheelhouse under $BANTIN_COMPOSE_CACHE, the images in the
# engine. Exit 0: passed; 1: failed; 0 with "SKIPPED" printed: no engine can start here, except
# with BANTIN_TEST_STRICT=1 (.ci/run), where a skip for missing infrastructure is a failure (1).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
CACHE=${BANTIN_COMPOSE_CACHE:-${HOME:-/root}/.cache/bantin-compose}
SUITE=bookworm
MIRROR=${BANTIN_DEBIAN_MIRROR:-}
# Everything the service images run, from Debian packages: Python's libraries for the app
# image (its interpreter: see build_python_image); Redis,
# PostgreSQL and nginx (with envsubst, for deploy/nginx.conf's template, and wget, for the
# compose healthcheck) standing in for the official images.
PACKAGES=python3,redis-server,postgresql,nginx-light,gettext-base,wget
ROOTFS_RECIPE=2  # bump when the way either image is made changes
PYTHON_RECIPE=2
PRIVATE_SOCK=/run/bantin-compose-docker.sock
PRIVATE_ROOT=/var/lib/bantin-compose-docker
PRIVATE_EXEC=/run/bantin-compose-docker-exec
PRIVATE_PID=/run/bantin-compose-docker.pid
ENGINE_WAIT=90      # seconds a starting dockerd gets to answer, all tries together
ENGINE_STOP_WAIT=60 # seconds after TERM: dockerd stops its containers (10 s each) first
STARTED_DOCKERD=""  # the private dockerd's pid, started or adopted here: stopped on exit

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
skip() {
  if [ "${BANTIN_TEST_STRICT:-}" = 1 ]; then
    say "FAILED (BANTIN_TEST_STRICT=1: a skip for missing infrastructure is a failure): $*"
    exit 1
  fi
  say "SKIPPED: $*"; exit 0
}

# The private engine's containerd and shims live under its exec root: after a KILL of dockerd
# they would keep running (and keep its containers alive), so they go too, by that path only.
kill_private_leftovers() {
  local pids shim
  pids=$(pgrep -f -- "containerd-shim.*$PRIVATE_EXEC/" || true)
  for shim in $pids; do
    pkill -KILL -P "$shim" 2>/dev/null || true  # the container's init: its namespace goes
    kill -KILL "$shim" 2>/dev/null || true
  done
  pids=$(pgrep -f -- "containerd .*$PRIVATE_EXEC/containerd" || true)
  for shim in $pids; do kill -KILL "$shim" 2>/dev/null || true; done
}

stop_dockerd() {
  [ -n "$STARTED_DOCKERD" ] || return 0
  local pid=$STARTED_DOCKERD
  STARTED_DOCKERD=""
  kill -0 "$pid" 2>/dev/null || return 0
  say "stopping the private dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq "$ENGINE_STOP_WAIT"); do
    kill -0 "$pid" 2>/dev/null || { say "dockerd stopped"; return 0; }
    sleep 1
  done
  say "dockerd still running ${ENGINE_STOP_WAIT} s after TERM: KILL, and its containerd shims"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 10); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill_private_leftovers
  rm -f "$PRIVATE_PID" "$PRIVATE_SOCK"
}
trap stop_dockerd EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- 1. the engine ------------------------------------------------------------------------
engine_answers() {
  timeout "${1:-20}" docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

need_tools() {
  local missing=()
  command -v docker >/dev/null || missing+=(docker.io)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || skip "missing ${missing[*]} and not root to install them"
    say "installing ${missing[*]} (apt)"
    if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
      skip "apt could not install ${missing[*]}"
    fi
  fi
}

start_engine() {
  if [ -n "${DOCKER_HOST:-}" ] && engine_answers; then
    say "using the engine at $DOCKER_HOST"; return
  fi
  if [ -z "${DOCKER_HOST:-}" ] && engine_answers; then
    say "using the default engine"; return
  fi
  [ "$(id -u)" = 0 ] || skip "no Docker engine answers and starting one needs root"
  export DOCKER_HOST="unix://$PRIVATE_SOCK"
  local leftover
  leftover=$(cat "$PRIVATE_PID" 2>/dev/null || true)
  if [[ "$leftover" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$leftover/comm" 2>/dev/null)" = dockerd ]; then
    # Left by an earlier run that was killed before its trap ran: adopt it, so this run
    # stops it at the end (or stop it now if it no longer answers).
    STARTED_DOCKERD=$leftover
    if engine_answers; then
      say "using the private engine left at $DOCKER_HOST (pid $leftover; stopped at the end)"
      return
    fi
    say "the private dockerd left running (pid $leftover) does not answer: stopping it"
    stop_dockerd
  elif engine_answers; then
    # Answering on our socket without our pidfile: not ours to stop.
    say "using the engine found at $DOCKER_HOST (not started by this test: left running)"
    return
  fi
  say "starting a private dockerd at $DOCKER_HOST (data root $PRIVATE_ROOT)"
  mkdir -p "$PRIVATE_ROOT" "$CACHE"
  dockerd --host "$DOCKER_HOST" --data-root "$PRIVATE_ROOT" --exec-root "$PRIVATE_EXEC" \
    --pidfile "$PRIVATE_PID" >"$CACHE/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  # One bound for all the tries together: a dockerd that lives but never answers must not
  # hold the run (each try is short, and the last one ends at the deadline).
  local deadline=$((SECONDS + ENGINE_WAIT)) left
  while left=$((deadline - SECONDS)) && [ "$left" -gt 0 ]; do
    engine_answers "$((left < 5 ? left : 5))" && { say "dockerd is up"; return; }
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
    sleep 1
  done
  tail -n 20 "$CACHE/dockerd.log" >&2 || true
  stop_dockerd  # TERM, wait, KILL: never leave it running
  skip "dockerd did not answer within ${ENGINE_WAIT} s (log above: $CACHE/dockerd.log)"
}

# --- 2. the images ------------------------------------------------------------------------
hash_of() { sha256sum | cut -c1-12; }

debian_mirror() {
  [ -n "$MIRROR" ] && { echo "$MIRROR"; return; }
  # The mirror apt already uses (deb822 sources or the one-line format).
  local found
  found=$(grep -rhoE '^(URIs:\s*|deb\s+(\[[^]]*\]\s*)?)https?://[^ ]+/debian/?(\s|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | grep -v -- '-security' | head -n 1 || true)
  echo "${found:-http://deb.debian.org/debian}"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

build_debian_image() {
  local tag=$1 tarball=$CACHE/rootfs-$2.tar
  image_exists "$tag" && { say "base image $tag: cached in the engine"; return; }
  if [ ! -s "$tarball" ]; then
    local mirror dir
    mirror=$(debian_mirror)
    dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    say "debootstrap $SUITE from $mirror with $PACKAGES (about a minute)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" "$mirror" \
        >"$CACHE/debootstrap.log" 2>&1; then
      tail -n 20 "$CACHE/debootstrap.log" >&2; rm -rf "$dir"; return 1
    fi
    # What an image does not need: downloaded packages and package lists; and the cluster
    # Debian's postinst made (on 5433 when the host's 5432 is taken): the postgres service
    # makes its own in its volume (deploy/compose/offline-postgres.sh), and pg_isready must
    # not be pointed at this one's port.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
      "$dir"/etc/postgresql/*/main "$dir"/var/lib/postgresql/*/main
    tar -C "$dir" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$dir"
  fi
  say "importing $tarball as $tag"
  docker import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
}

# The Python image, laid out like python:3.11-slim (python, python3 and pip in /usr/local/bin)
# with the wheelhouse, and pip told to use only that wheelhouse. Its CPython is the one this
# test runs on (the venv's base, e.g. pyenv's 3.11.7): Debian bookworm's python3 is 3.11.2,
# below Bantin's floor (3.11.4: tarfile's extraction filters, which `bantin restore` needs).
# Copied without its site-packages, tests, IDLE and tkinter; libpython goes where ld.so looks.
python_prefix() { "$PYTHON" -c 'import sys; print(sys.base_prefix)'; }

build_python_image() {
  local tag=$1 base=$2 wheelhouse=$3 prefix context
  image_exists "$tag" && { say "python image $tag: cached in the engine"; return; }
  prefix=$(python_prefix)
  if [ "$prefix" = /usr ] || [ ! -x "$prefix/bin/python3.11" ]; then
    say "needs a self-contained CPython 3.11 (>= 3.11.4) prefix to copy; $PYTHON's is $prefix"
    return 1
  fi
  context=$(mktemp -d "$CACHE/python-image.XXXXXX")
  mkdir -p "$context/python/bin" "$context/python/lib"
  cp -a "$prefix/bin/python3.11" "$context/python/bin/"
  cp -a "$prefix"/lib/libpython3*.so* "$context/python/lib/"
  tar -C "$prefix/lib" --exclude='python3.11/site-packages/*' --exclude='python3.11/test' \
    --exclude='__pycache__' --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
    --exclude='python3.11/turtledemo' --exclude='python3.11/lib2to3/tests' \
    --exclude='python3.11/config-3.11-*/*.a' -cf - python3.11 | tar -C "$context/python/lib" -xf -
  cp -a "$wheelhouse" "$context/wheels"
  say "building $tag from $base, $prefix and the wheelhouse"
  docker build -q -t "$tag" -f - "$context" >/dev/null <<EOF || { rm -rf "$context"; return 1; }
FROM $base
COPY python/ /usr/local/
COPY wheels/ /opt/wheelhouse/
RUN ldconfig \\
    && ln -s python3.11 /usr/local/bin/python3 && ln -s python3.11 /usr/local/bin/python \\
    && python -m ensurepip --default-pip && python -c 'import ssl, sqlite3, ctypes, lzma, bz2'
ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheelhouse PIP_DISABLE_PIP_VERSION_CHECK=1
EOF
  rm -rf "$context"
}

# Every file the lock names, hash-checked (wheels for CPython 3.11 on x86_64; feedgen is an
# sdist), plus setuptools and wheel: the Dockerfile builds Bantin's wheel and feedgen's.
build_wheelhouse() {
  local dir=$1
  [ -f "$dir/.complete" ] && { say "wheelhouse $dir: cached"; return; }
  say "downloading the wheelhouse into $dir"
  rm -rf "$dir" "$dir.part" && mkdir -p "$dir.part"
  local log=$CACHE/pip-download.log
  # pip's own exit status decides (its output goes to the log, shown on a failure).
  if ! "$PYTHON" -m pip download --disable-pip-version-check --require-hashes --no-deps \
      -r requirements.lock -d "$dir.part" >"$log" 2>&1 \
    || ! "$PYTHON" -m pip download --disable-pip-version-check --no-deps \
      "setuptools>=68" wheel -d "$dir.part" >>"$log" 2>&1; then
    tail -n 20 "$log" >&2; say "pip download failed (log: $log)"; return 1
  fi
  # Every locked name==version has its file (the extras above count for nothing here).
  local missing
  missing=$("$PYTHON" - "$dir.part" <<'EOF'
import re, sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

have = set()
for f in Path(sys.argv[1]).iterdir():
    if f.name.startswith("."):
        continue
    parse = parse_wheel_filename if f.name.endswith(".whl") else parse_sdist_filename
    have.add((parse(f.name)[0], parse(f.name)[1]))
locked = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", Path("requirements.lock").read_text(), re.M)
print(" ".join(f"{n}=={v}" for n, v in locked if (canonicalize_name(n), Version(v)) not in have))
EOF
) || { say "could not check the wheelhouse"; return 1; }
  if [ -n "$missing" ]; then
    say "wheelhouse incomplete: no file for $missing"; return 1
  fi
  touch "$dir.part/.complete" && mv "$dir.part" "$dir"
}

main() {
  mkdir -p "$CACHE"
  # One run at a time: runs share the private engine (a later one adopts and stops it) and
  # the compose project.
  exec 9>"$CACHE/run.lock"
  if ! flock -n 9; then
    say "FAILED: another compose test is running (it holds $CACHE/run.lock)"; exit 1
  fi
  need_tools
  start_engine
  local started=$SECONDS rootfs_key lock_key python_key
  rootfs_key=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$ROOTFS_RECIPE" | hash_of)
  lock_key=$(hash_of <requirements.lock)
  python_key=$("$PYTHON" -c 'import sys; print(sys.base_prefix, sys.version)' | hash_of)
  export BANTIN_OFFLINE_DEBIAN_IMAGE="bantin-offline-debian:$rootfs_key"
  export BANTIN_OFFLINE_PYTHON_IMAGE="bantin-offline-python:$rootfs_key-$python_key-$lock_key-r$PYTHON_RECIPE"
  build_debian_image "$BANTIN_OFFLINE_DEBIAN_IMAGE" "$rootfs_key"
  build_wheelhouse "$CACHE/wheelhouse-$lock_key"
  build_python_image "$BANTIN_OFFLINE_PYTHON_IMAGE" "$BANTIN_OFFLINE_DEBIAN_IMAGE" \
    "$CACHE/wheelhouse-$lock_key"
  say "base images ready in $((SECONDS - started)) s"
  local status=0
  "$PYTHON" tests/compose/scenario.py || status=$?
  # Our private engine only: drop the app images each rebuild left untagged (the base images
  # and the current app image stay, as the cache of the next run).
  [ -z "$STARTED_DOCKERD" ] || docker image prune -f >/dev/null || true
  return "$status"
}

main "$@"
