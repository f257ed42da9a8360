"""The deliver worker's HTTP transport: it connects only to public addresses, checked at
connect time (DNS rebinding).

check_callback resolves a callback's host, then httpx would resolve it again to connect: a
host answering with a 0 TTL could pass the check with a public address and then be connected
to at 127.0.0.1 or 169.254.169.254. Here the host is resolved once, every answer checked, and
the connection made to the checked IP literal. TLS SNI, certificate checks and the Host
header still use the hostname: httpcore takes `server_hostname` for start_tls from the
request URL (httpcore/_sync/connection.py, `_connect`), not from what connect_tcp was given.

Every stream also obeys a whole-request deadline (`deadline`): httpx's timeouts bound each
read, so a callback trickling a byte of its answer every few seconds would hold a delivery
thread for ever; here each read, write and connect may take only what is left of it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from services.deliver.topics import non_public, parse_address

_local = threading.local()  # per delivery thread: when the current request must be over


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Requests made inside take `seconds` at most in all (connect, send, every read of the
    answer), on this thread; past it, the next I/O raises httpcore.ReadTimeout (or the
    Connect/WriteTimeout), which httpx passes on as its own timeout error."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


DEADLINE_PASSED = "the request took longer than its deadline in all"


def _left(timeout: float | None, error: type[Exception]) -> tuple[float | None, bool]:
    """`timeout` cut to what is left of the thread's deadline, and whether the deadline is
    what bounds it; raises `error` if nothing is left."""
    ends: float | None = getattr(_local, "deadline", None)
    if ends is None:
        return timeout, False
    left = ends - time.monotonic()
    if left <= 0:
        raise error(DEADLINE_PASSED)
    if timeout is None or left < timeout:
        return left, True
    return timeout, False


class DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation stops at the thread's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        timeout, cut = _left(timeout, httpcore.ReadTimeout)
        try:
            return self._stream.read(max_bytes, timeout)
        except httpcore.ReadTimeout:
            if cut:  # say why: a bare "timed out" reads like the per-read timeout
                raise httpcore.ReadTimeout(DEADLINE_PASSED) from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        timeout, cut = _left(timeout, httpcore.WriteTimeout)
        try:
            self._stream.write(buffer, timeout)
        except httpcore.WriteTimeout:
            if cut:
                raise httpcore.WriteTimeout(DEADLINE_PASSED) from None
            raise

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout, _ = _left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's own connections, under the deadline (private callbacks allowed: tests)."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout, _ = _left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            super().connect_tcp(host, port, timeout, local_address, socket_options)
        )


class PublicOnlyBackend(httpcore.SyncBackend):
    """Refuses (httpcore.ConnectError) a host with any non-public address, before any socket
    is opened; connects to the checked addresses, in the resolver's order."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        addresses = list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos))
        for address in addresses:  # all of them: one bad answer is a rebinding attempt
            refused = non_public(address)
            if refused is not None:
                raise httpcore.ConnectError(
                    f"{host} resolves to {refused}, a non-public address: not connecting"
                )
        last: httpcore.ConnectError | None = None
        for address in addresses:  # as socket.create_connection would: the next on failure
            try:
                return DeadlineStream(
                    super().connect_tcp(
                        str(address), port, _left(timeout, httpcore.ConnectTimeout)[0],
                        local_address, socket_options,
                    )
                )  # fmt: skip
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no address")


class DeliveryTransport(httpx.HTTPTransport):
    """httpx's transport on a pool whose connections go through PublicOnlyBackend (or
    DeadlineBackend when private callbacks are allowed, as in tests): both obey `deadline`."""

    def __init__(self, limits: httpx.Limits, allow_private: bool) -> None:
        super().__init__(limits=limits)
        backend = DeadlineBackend() if allow_private else PublicOnlyBackend()
        # HTTPTransport has no public way to take a network backend, and writing our own
        # BaseTransport would copy its private request/response/exception mapping. So this
        # replaces the pool it built (its `_pool`, all that handle_request and close use)
        # with one made the same way (httpx/_transports/default.py) plus the backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
