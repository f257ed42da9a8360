"""The README's example subscriber answers the hub's checks and accepts only signed pushes."""

from __future__ import annotations

import contextlib
import io
import threading
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import httpx

from services.deliver.topics import signature

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
SERVE_LINE = 'HTTPServer(("0.0.0.0", 9000), Subscriber).serve_forever()'


def example() -> str:
    section = README.split("## Push (WebSub)", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 22  # "a subscriber in 20 lines", give or take
    return code


def test_the_example_subscriber_echoes_challenges_and_checks_signatures() -> None:
    code = example()
    assert SERVE_LINE in code
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(code.replace(SERVE_LINE, ""), namespace)  # everything but serving for ever
    server = HTTPServer(("127.0.0.1", 0), namespace["Subscriber"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/push"
    printed = io.StringIO()
    try:
        check = httpx.get(url, params={"hub.mode": "subscribe", "hub.challenge": "c-123"})
        assert (check.status_code, check.text) == (200, "c-123")

        body = b"<feed/>"
        secret = namespace["SECRET"].decode()
        with contextlib.redirect_stdout(printed):
            good = httpx.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/atom+xml",
                    "X-Hub-Signature": signature(secret, body),
                },
            )
            forged = httpx.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/rss+xml",
                    "X-Hub-Signature": signature("x", body),
                },
            )
        assert good.status_code == forged.status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    assert printed.getvalue().splitlines() == ["application/atom+xml 7 bytes"]  # fmt: skip
