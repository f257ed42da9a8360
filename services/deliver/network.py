"""The deliver worker's HTTP transport: it connects only to public addresses, checked at
connect time (DNS rebinding).

check_callback resolves a callback's host, then httpx would resolve it again to connect: a
host answering with a 0 TTL could pass the check with a public address and then be connected
to at 127.0.0.1 or 169.254.169.254. Here the host is resolved once, every answer checked, and
the connection made to the checked IP literal. TLS SNI, certificate checks and the Host
header still use the hostname: httpcore takes `server_hostname` for start_tls from the
request URL (httpcore/_sync/connection.py, `_connect`), not from what connect_tcp was given.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import httpcore
import httpx

from services.deliver.topics import non_public, parse_address


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
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no address")


class DeliveryTransport(httpx.HTTPTransport):
    """httpx's transport on a pool whose connections go through PublicOnlyBackend (or the
    plain one when private callbacks are allowed, as in tests)."""

    def __init__(self, limits: httpx.Limits, allow_private: bool) -> None:
        super().__init__(limits=limits)
        backend = httpcore.SyncBackend() if allow_private else PublicOnlyBackend()
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
