"""One HTTP server started exactly as `bantin up` starts it, for tests that need several."""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.cli.up import uvicorn_argv
from shared.embedded_redis import free_port
from shared.testing import wait_healthy

INGEST = "services.ingest.app:app_from_env"
GATEWAY = "services.gateway.app:app_from_env"


def start_server(
    factory: str, env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """The server of `factory` on a free port, once its /healthz answers: (process, URL)."""
    port = free_port()
    process = subprocess.Popen(
        uvicorn_argv(factory, "127.0.0.1", port),
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/healthz", process, log_path)
    except BaseException:
        process.kill()
        raise
    return process, url
