"""``recflow cdn``: a small HTTP server over the local bucket that behaves like the CDN.

Clients, browsers and tests see what CloudFront in front of S3 would give them: the
stored gzip bytes with ``Content-Encoding: gzip`` (decompressed for the rare client that
does not accept gzip), the same ``Content-Type`` and ``Cache-Control`` the uploader sets
(:func:`jobs.publish.layout.headers_for`), an ``ETag`` with ``If-None-Match`` → 304, CORS for
browsers (including the preflight), and a JSON 404 for missing keys. Objects are
replaced by rename, so a request never reads half an object.
"""

from __future__ import annotations

import gzip
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobs.config import Settings
from jobs.publish.layout import NOT_FOUND_BODY, headers_for, md5_hex, served_prefix


class _BadPathError(ValueError):
    """A request path no key can have (answered 400)."""


def make_handler(root: Path, cache_seconds: int, cors_origin: str, served: str = "recs/") -> type:
    root = root.resolve()

    class Handler(BaseHTTPRequestHandler):
        server_version = "recflow-cdn"
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes; with Nagle's algorithm the body then waits
        # for the client's delayed ACK of the headers (~40 ms per object on a kept-alive
        # connection, measured by bench/bench_shop.py).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # a CDN does not print a line per request

        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", cors_origin)
            self.send_header("Access-Control-Expose-Headers", "ETag, Content-Length")

        def _error(self, status: HTTPStatus, message: str) -> None:
            body = json.dumps({"error": message, "status": status.value}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "public, max-age=10")
            self._cors()
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _resolve(self) -> tuple[str, Path] | None:
            """The served key and its file; None for 404; _BadPath for a 400."""
            key = unquote(urlsplit(self.path).path).lstrip("/")
            if "\x00" in key:
                # No file name holds a NUL (pathlib raises on it): a 400, like CloudFront,
                # instead of an exception that drops the connection.
                raise _BadPathError("NUL byte in the path")
            try:
                path = (root / key).resolve()
            except OSError:
                raise _BadPathError("path the file system cannot hold") from None
            if not key or not path.is_relative_to(root) or not path.is_file():
                return None
            if any(part.startswith(".") for part in Path(key).parts):
                return None  # temporary files of an upload in progress
            if not key.startswith(served):
                return None  # like the bucket policy: staging and the rest stay private
            return key, path

        def do_OPTIONS(self) -> None:
            self.send_response(HTTPStatus.NO_CONTENT)
            self._cors()
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "If-None-Match, Accept-Encoding")
            self.send_header("Access-Control-Max-Age", "86400")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            try:
                found = self._resolve()
            except _BadPathError as exc:
                self._error(HTTPStatus.BAD_REQUEST, f"bad request path: {exc}")
                return
            if found is None:
                self._error(HTTPStatus.NOT_FOUND, str(NOT_FOUND_BODY["error"]))
                return
            key, path = found
            data = path.read_bytes()
            etag = f'"{md5_hex(data)}"'
            headers = headers_for(key, cache_seconds)
            if self.headers.get("If-None-Match") == etag:
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", headers["Cache-Control"])
                self._cors()
                self.end_headers()
                return
            accepts_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
            if not accepts_gzip:
                data = gzip.decompress(data)
                del headers["Content-Encoding"]
            self.send_response(HTTPStatus.OK)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("ETag", etag)
            self.send_header("Vary", "Accept-Encoding")
            self.send_header("Content-Length", str(len(data)))
            self._cors()
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _not_allowed(self) -> None:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET, HEAD, OPTIONS")

        do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    return Handler


def make_server(settings: Settings, port: int | None = None) -> ThreadingHTTPServer:
    """The server over ``RECFLOW_PUBLISH_DIR`` (port 0 picks a free one)."""
    assert settings.publish_dir is not None
    settings.publish_dir.mkdir(parents=True, exist_ok=True)
    handler = make_handler(
        settings.publish_dir,
        settings.publish_cache_seconds,
        settings.cdn_cors_origin,
        served_prefix(settings.publish_prefix),
    )
    server = ThreadingHTTPServer(
        (settings.cdn_host, settings.cdn_port if port is None else port), handler
    )
    server.daemon_threads = True
    return server


def serve_in_background(settings: Settings, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start the server on a thread; returns it and its base URL (stop: ``shutdown()``)."""
    server = make_server(settings, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="recflow-cdn").start()
    host, bound = server.server_address[:2]
    return server, f"http://{host}:{bound}"
