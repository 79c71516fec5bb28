"""The CDN stand-in over real HTTP: a path no key can hold is a 400, not a dropped
connection (a NUL byte made pathlib raise inside the handler)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest

from jobs.config import Settings
from jobs.publish.cdn import serve_in_background


@pytest.fixture
def cdn(settings: Settings) -> Iterator[tuple[str, int]]:
    server, _ = serve_in_background(settings)
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["/recs/%00", "/recs/v/x%00.json", "/%00/../recs/latest.json"])
def test_a_nul_byte_in_the_path_is_a_400(cdn: tuple[str, int], path: str) -> None:
    host, port = cdn
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 400
        assert body["status"] == 400 and "NUL" in body["error"]
        conn.request("GET", "/recs/latest.json")  # the same connection still answers
        again = conn.getresponse()
        again.read()
        assert again.status == 404
    finally:
        conn.close()


def test_a_raw_request_with_a_nul_byte_gets_an_http_answer(cdn: tuple[str, int]) -> None:
    with socket.create_connection(cdn, timeout=10) as sock:
        sock.sendall(b"HEAD /recs/v/%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
