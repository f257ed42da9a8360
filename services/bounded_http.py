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
import enum
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from shared.settings import get_settings


class _Reading(enum.Enum):
    HEAD = enum.auto()
    BODY = enum.auto()
    NOTHING = enum.auto()  # request read; the app (or the keep-alive timer) has the connection


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
        self.timeouts = {
            _Reading.HEAD: settings.header_timeout_seconds,
            _Reading.BODY: settings.body_timeout_seconds,
            _Reading.NOTHING: settings.header_timeout_seconds,  # just a pace to look again
        }
        self.reading = _Reading.HEAD
        self.reading_since = 0.0
        self.head_bytes = 0
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a whole head is closed too, even one sending nothing.
        self._start(_Reading.HEAD)
        self._watch(self.timeouts[_Reading.HEAD])

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
        super().data_received(data)
        if self.reading is _Reading.HEAD and not self.transport.is_closing():
            # Counted after parsing: a chunk that completes its head is never refused, and one
            # chunk (the transport reads 256 KiB at most) is all a head can overshoot by.
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head:
                self._refuse(
                    431,
                    "Request header fields too large",
                    f"The request head is over {self.max_head} bytes.",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.reading is not _Reading.HEAD:  # a new request on a kept-alive connection
            self._start(_Reading.HEAD)
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        self._start(_Reading.BODY)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._start(_Reading.NOTHING)
        super().on_message_complete()

    def _start(self, reading: _Reading) -> None:
        self.reading, self.reading_since = reading, self.loop.time()

    def _watch(self, delay: float) -> None:
        self.watchdog = self.loop.call_later(delay, self._check)

    def _check(self) -> None:
        self.watchdog = None
        if self.transport.is_closing():
            return
        timeout = self.timeouts[self.reading]
        overdue = self.loop.time() - self.reading_since - timeout
        if self.reading is _Reading.NOTHING or overdue < 0:
            self._watch(timeout if self.reading is _Reading.NOTHING else -overdue)
        elif self.reading is _Reading.HEAD and self.head_bytes == 0 and self.cycle is None:
            self.transport.close()  # never sent a byte: nobody to answer
        else:
            what = "head" if self.reading is _Reading.HEAD else "body"
            self._refuse(
                408, "Request timeout", f"The request {what} did not arrive within {timeout:g} s."
            )

    def _may_answer(self) -> bool:
        """True if no response of ours is on the wire, so a whole one can be written."""
        if self.cycle is None:
            return True
        if self.reading is _Reading.HEAD:
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
