"""uvicorn's httptools protocol with the limits uvicorn lacks: a cap on the request head and
deadlines for reading the head and the body.

uvicorn bounds neither time nor, with httptools, head size (its issue #157): a client sending
an endless header grows the process without limit, and one sending a byte now and then holds
its connection for ever. h11 caps the head (`--h11-max-incomplete-event-size`) but parses in
Python and has no read timeout either. So: `--http services.bounded_http:BoundedHttpToolsProtocol`.

- Head: at most BANTIN_MAX_HEADER_BYTES, else `431` and the connection is closed; complete
  within BANTIN_HEADER_TIMEOUT_SECONDS of the connection's start (or, on a kept-alive
  connection, of the request's first byte), else `408` and closed.
- Body: complete within BANTIN_BODY_TIMEOUT_SECONDS of its head, else closed (the app sees a
  disconnect).

One timer per connection, re-armed only when it fires (never per request), and a counter
while a head is read: the gateway's fast path pays next to nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from shared.settings import get_settings

# What the connection is waiting for. Plain ints: this runs for every request of the gateway.
HEAD, BODY, NOTHING = 0, 1, 2  # NOTHING: the request is read; the app has the connection
_now = time.monotonic


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()  # cached: read once per process
        self.max_head = settings.max_header_bytes
        # Per state: how long it may last (NOTHING's is only the pace of looking again).
        self.timeouts = (
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
            settings.header_timeout_seconds,
        )
        self.reading = HEAD
        self.reading_since = 0.0
        self.head_bytes = 0
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a whole head is closed too, even one sending nothing.
        self.reading_since = _now()
        self._watch(self.timeouts[HEAD])

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        if self.watchdog is not None:  # the connection is no longer ours to time
            self.watchdog.cancel()
            self.watchdog = None
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self.reading == NOTHING:  # the next request on a kept-alive connection begins
            self.reading, self.reading_since, self.head_bytes = HEAD, _now(), 0
        super().data_received(data)
        if self.reading == HEAD:
            # Counted after parsing: a chunk that completes its head is never refused, and one
            # chunk (the transport reads 256 KiB at most) is all a head can overshoot by.
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head and not self.transport.is_closing():
                self._refuse(
                    431,
                    "Request header fields too large",
                    f"The request head is over {self.max_head} bytes.",
                )

    def on_headers_complete(self) -> None:
        self.reading, self.reading_since = BODY, _now()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading = NOTHING
        super().on_message_complete()

    def _watch(self, delay: float) -> None:
        self.watchdog = self.loop.call_later(delay, self._check)

    def _check(self) -> None:
        """The one timer of the connection: act on an overdue head or body, else look again
        when the current one would be due."""
        self.watchdog = None
        if self.transport.is_closing():
            return
        timeout = self.timeouts[self.reading]
        left = self.reading_since + timeout - _now()
        if self.reading == NOTHING or left > 0:
            self._watch(timeout if self.reading == NOTHING else left)
        elif self.reading == HEAD and self.head_bytes == 0 and self.cycle is None:
            self.transport.close()  # never sent a byte: nobody to answer
        else:
            what = "head" if self.reading == HEAD else "body"
            self._refuse(
                408, "Request timeout", f"The request {what} did not arrive within {timeout:g} s."
            )

    def _may_answer(self) -> bool:
        """True if no response of ours is on the wire, so a whole one can be written."""
        if self.cycle is None:
            return True
        if self.reading == HEAD:
            return self.cycle.response_complete
        return not self.cycle.response_started

    def _refuse(self, status: int, title: str, detail: str) -> None:
        if self._may_answer():
            body = json.dumps(
                {"type": "about:blank", "title": title, "status": status, "detail": detail}
            ).encode()
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(
                b"content-type: application/problem+json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(b"".join(head) + body)
        self.transport.close()
