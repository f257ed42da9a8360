"""The deliver client connects only to public addresses, checked at connect time (DNS
rebinding): resolver answers are simulated, sockets are real."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest
from httpcore._backends.sync import SyncStream  # private: only to observe the SNI

from services.deliver.network import DeliveryTransport, PublicOnlyBackend
from services.deliver.topics import CallbackRefused, check_callback, non_public

PUBLIC_IP = "93.184.216.34"


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::1", "fe80::1", "::",
     "::ffff:127.0.0.1",  # IPv4-mapped
     "2002:7f00:1::1",  # 6to4 of 127.0.0.1
     "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
     "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
     "::7f00:1", "::808:808"],  # IPv4-compatible (::/96): refused whatever it wraps
)  # fmt: skip
def test_non_public_addresses_are_refused_however_wrapped(address: str) -> None:
    assert non_public(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [PUBLIC_IP, "2606:2800:220:1::1", "::ffff:93.184.216.34", "2002:5db8:d822::1",
     "64:ff9b::5db8:d822"],
)  # fmt: skip
def test_public_addresses_are_allowed(address: str) -> None:
    assert non_public(ipaddress.ip_address(address)) is None


Answers = dict[str, list[str]]


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Answers:
    """Simulated DNS: host -> the addresses the resolver answers (other hosts: the real one)."""
    table: Answers = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in table:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (ip, port))
            for ip in table[host]
        ]  # fmt: skip

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


class Listener:
    """A real TCP listener on loopback, counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.sock.close()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch, listener: Listener) -> list[tuple[str, int]]:
    """Where the backend connects; every connection really goes to the listener."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        made.append(address)
        return real(("127.0.0.1", listener.port), *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return made


def test_a_host_rebound_to_loopback_is_refused_before_any_socket_opens(
    answers: Answers, connections: list[tuple[str, int]], listener: Listener
) -> None:
    # check_callback saw a public answer; the resolver now answers loopback (a 0 TTL).
    answers["rebind.example"] = [PUBLIC_IP]
    check_callback("http://rebind.example/push", allow_private=False)
    answers["rebind.example"] = ["127.0.0.1"]
    with pytest.raises(httpcore.ConnectError, match="non-public address"):
        PublicOnlyBackend().connect_tcp("rebind.example", listener.port)
    # One bad answer among good ones is refused too.
    answers["rebind.example"] = [PUBLIC_IP, "::ffff:169.254.169.254"]
    with pytest.raises(httpcore.ConnectError, match="169.254.169.254"):
        PublicOnlyBackend().connect_tcp("rebind.example", 80)
    assert connections == [] and listener.accepted == 0


def test_through_the_client_a_rebinding_is_a_connect_error_and_reaches_nothing(
    answers: Answers, connections: list[tuple[str, int]], listener: Listener
) -> None:
    answers["rebind.example"] = ["127.0.0.1"]
    limits = httpx.Limits(max_connections=2)
    with httpx.Client(transport=DeliveryTransport(limits, allow_private=False)) as client:
        with pytest.raises(httpx.ConnectError, match="non-public address"):
            client.post(f"http://rebind.example:{listener.port}/push", content=b"feed")
    assert connections == [] and listener.accepted == 0


def test_a_public_answer_is_connected_to_as_the_checked_ip_literal(
    answers: Answers, connections: list[tuple[str, int]], listener: Listener
) -> None:
    answers["reader.example"] = [PUBLIC_IP]
    stream = PublicOnlyBackend().connect_tcp("reader.example", 443, timeout=5.0)
    stream.close()
    assert connections == [(PUBLIC_IP, 443)]  # not the hostname: no second resolution


def test_allowing_private_callbacks_skips_the_check(listener: Listener) -> None:
    limits = httpx.Limits(max_connections=2)
    with httpx.Client(transport=DeliveryTransport(limits, allow_private=True)) as client:
        with pytest.raises(httpx.TransportError) as raised:
            client.get(f"http://127.0.0.1:{listener.port}/")
    # Connected, then the listener hung up (a reset or an empty answer, as timing has it).
    assert not isinstance(raised.value, httpx.ConnectError)
    assert listener.accepted == 1


def test_check_callback_refuses_wrapped_private_addresses(answers: Answers) -> None:
    answers["sixtofour.example"] = ["2002:7f00:1::1"]
    with pytest.raises(CallbackRefused, match="127.0.0.1"):
        check_callback("https://sixtofour.example/push", allow_private=False)


def test_host_header_and_tls_server_name_stay_the_hostname(
    answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            seen["host"] = self.headers["Host"]
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *a, **k: real(("127.0.0.1", port), *a, **k))  # fmt: skip

    def start_tls(self: Any, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> Any:  # fmt: skip
        seen["sni"] = str(server_hostname)
        raise httpcore.ConnectError("stop before the handshake")

    answers["reader.example"] = [PUBLIC_IP]
    limits = httpx.Limits(max_connections=2)
    try:
        with httpx.Client(transport=DeliveryTransport(limits, allow_private=False)) as client:
            response = client.post(f"http://reader.example:{port}/p")
            assert response.status_code == 204 and seen["host"].startswith("reader.example:")
            monkeypatch.setattr(SyncStream, "start_tls", start_tls)
            with pytest.raises(httpx.ConnectError):
                client.post("https://reader.example/p")
            assert seen["sni"] == "reader.example"
    finally:
        server.shutdown()
        server.server_close()
