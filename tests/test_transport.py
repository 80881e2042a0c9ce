"""hubvram.transport.RangeAdapter: pooled http.client connections for the ranged header reads.

Everything above it is covered through the fake Hub (tests/test_integration_hub.py: faults, redirects,
tokens, truncation); these pin the transport's own promises on a bare local server.
"""

from __future__ import annotations

import http.server
import socketserver
import threading

import pytest
import requests

from hubvram.transport import MAX_OTHER_BODY, RangeAdapter

BODY = bytes(range(256)) * 400  # 102,400 bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range"), self.client_address[1]))
        if self.path == "/big-error":
            self.send_response(500)
            self.send_header("Content-Length", str(4 * MAX_OTHER_BODY))
            self.end_headers()
            self.wfile.write(b"x" * (4 * MAX_OTHER_BODY))
            return
        a, b = map(int, self.headers["Range"].removeprefix("bytes=").split("-"))
        if self.path == "/ignore-range":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        else:
            part = BODY[a:b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{a + len(part) - 1}/{len(BODY)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)
        if srv.close_after_each:  # an idle keep-alive connection the server drops (without saying so)
            self.close_connection = True


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that hangs up early is part of the tests
        pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests, srv.close_after_each = [], False
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(adapter, server, path, rng):
    p = requests.PreparedRequest()
    p.prepare(method="GET", url=f"http://127.0.0.1:{server.server_port}{path}", headers={"Range": rng})
    return adapter.send(p, timeout=(5, 5))


def test_keep_alive_connections_are_reused(server):
    a = RangeAdapter()
    got = [_get(a, server, f"/f{i}", "bytes=0-99") for i in range(5)]
    assert [(r.status_code, r.content, r.headers["Content-Range"]) for r in got] == \
        [(206, BODY[:100], "bytes 0-99/102400")] * 5
    assert len({port for _, _, port in server.requests}) == 1  # one connection for all five
    a.close()


def test_a_connection_the_server_dropped_is_replaced_once(server):
    server.close_after_each = True
    a = RangeAdapter()
    got = [_get(a, server, "/f", f"bytes={i}-{i + 9}") for i in range(3)]
    assert [r.content for r in got] == [BODY[i:i + 10] for i in range(3)]
    assert len({port for _, _, port in server.requests}) == 3  # a new connection each time, no error
    a.close()


def test_a_server_ignoring_range_is_read_only_as_far_as_asked(server):
    a = RangeAdapter()
    r = _get(a, server, "/ignore-range", "bytes=0-999")
    assert (r.status_code, r.content) == (200, BODY[:1000])  # the first 1,000 bytes of the whole file
    assert a._idle == {}  # the rest was never read: that connection is closed, not pooled
    error = _get(a, server, "/big-error", "bytes=0-9")
    assert error.status_code == 500 and len(error.content) == MAX_OTHER_BODY + 1
    a.close()


def test_transport_failures_are_requests_exceptions():
    a = RangeAdapter()
    p = requests.PreparedRequest()
    p.prepare(method="GET", url="http://127.0.0.1:9/x", headers={"Range": "bytes=0-9"})
    with pytest.raises(requests.ConnectionError, match="cannot connect to 127.0.0.1:9"):
        a.send(p, timeout=(2, 2))


@pytest.fixture
def tls_server(server, tmp_path):
    """The same server behind TLS, with a self-signed certificate for 127.0.0.1 (made by the openssl CLI)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:  # pragma: no cover - present on the CI image
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.requests, srv.close_after_each = [], False
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, str(cert)
    srv.shutdown()
    srv.server_close()


def test_tls_is_verified_against_the_ca_bundle_asked_for(tls_server):
    srv, cert = tls_server
    a = RangeAdapter()
    p = requests.PreparedRequest()
    p.prepare(method="GET", url=f"https://127.0.0.1:{srv.server_port}/f", headers={"Range": "bytes=0-9"})
    with pytest.raises(requests.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        a.send(p, timeout=(5, 5))  # requests' default bundle does not know this self-signed certificate
    r = a.send(p, timeout=(5, 5), verify=cert)
    assert (r.status_code, r.content) == (206, BODY[:10])
    a.close()
