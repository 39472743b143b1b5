"""Request limits answered with statuses, not resets: 414, 431, 413, 408."""

import socket
import time

import pytest

from harness import SLOW, HttpConn, openapi

LIMITS = {"max_uri_bytes": 1024, "max_header_bytes": 4096, "max_body_bytes": 10000,
          "header_timeout_ms": 700}


@pytest.fixture
def gw(gateway, backend):
    b = backend("lim")
    doc = openapi("/lm", {"/x": {"get": None, "post": None, "put": None}}, endpoints=[b.url])
    g = gateway([doc], limits=LIMITS)
    g.backend = b
    return g


def status_of_raw(port, data, timeout=10):
    """Send raw bytes, return the status code of the first response (None if the
    connection closed without one)."""
    with HttpConn(port, timeout=timeout) as c:
        try:
            c.send_raw(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_head()
        except ConnectionResetError:
            return None
        return None if r is None else r.status


def test_within_limits_ok(gw):
    r = gw.request("GET", "/lm/x?" + "a" * 900, headers=[("X-H", "v" * 3000)])
    assert r.status == 200, r
    r = gw.request("POST", "/lm/x", body=b"b" * 10000)
    assert r.status == 200, r
    assert r.echo()["body_len"] == 10000


def test_uri_too_long_414(gw):
    r = gw.request("GET", "/lm/x?" + "a" * 2000)
    assert r.status == 414, r
    assert gw.backend.stats()["requests"] == 0


def test_header_too_large_431(gw):
    r = gw.request("GET", "/lm/x", headers=[("X-Big", "v" * 6000)])
    assert r.status == 431, r
    r = gw.request("GET", "/lm/x", headers=[("X-H%d" % i, "v" * 100) for i in range(60)])
    assert r.status == 431, r
    assert gw.backend.stats()["requests"] == 0


def test_body_too_large_413(gw):
    r = gw.request("POST", "/lm/x", body=b"b" * 20000)
    assert r.status == 413, r
    assert gw.backend.stats()["requests"] == 0


def test_body_too_large_declared_only_413(gw):
    """Content-Length over the limit is refused from the head alone (no body sent)."""
    with HttpConn(gw.port, timeout=5) as c:
        c.send("PUT", "/lm/x", [("Content-Length", "50000000")])
        r = c.read_head()
    assert r is not None and r.status == 413, r


def test_chunked_body_too_large_413(gw):
    with HttpConn(gw.port) as c:
        try:
            c.send("POST", "/lm/x", body=b"c" * 30000, chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_head()
    assert r is not None and r.status == 413, r
    assert gw.backend.stats()["requests"] == 0


def test_incomplete_head_408(gw):
    t0 = time.monotonic()
    with HttpConn(gw.port, timeout=10) as c:
        c.send_raw(b"GET /lm/x HTTP/1.1\r\nHost: example\r\nX-Partial: ")
        r = c.read_head()
        dt = time.monotonic() - t0
    assert r is not None, "connection closed without a 408 (after %.2fs)" % dt
    assert r.status == 408, r
    assert 0.5 <= dt < 5 * SLOW, dt


def test_slowloris_trickle_408(gw):
    """Trickling header bytes does not extend the header timeout."""
    t0 = time.monotonic()
    with HttpConn(gw.port, timeout=10) as c:
        c.send_raw(b"GET /lm/x HTTP/1.1\r\n")
        status = None
        for i in range(40):
            try:
                c.send_raw(b"X-T%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            c.sock.settimeout(0.01)
            try:
                if not c._more():
                    break
            except socket.timeout:
                pass
            c.sock.settimeout(10)
            if b"\r\n\r\n" in c.buf:
                break
        c.sock.settimeout(5)
        r = c.read_head()
        status = r.status if r else None
    dt = time.monotonic() - t0
    assert status == 408, (status, dt)
    assert dt < 3.5 * SLOW, dt


def test_idle_connection_without_request_closed_quietly(gw):
    """An idle connection (no byte sent) may be closed, but never answered with junk."""
    with HttpConn(gw.port, timeout=3) as c:
        try:
            c.sock.settimeout(1.5)
            data = c.sock.recv(100)
        except socket.timeout:
            data = b""
        except ConnectionResetError:
            data = b""
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data


def test_limits_do_not_break_next_connection(gw):
    assert status_of_raw(gw.port, b"GET /lm/x?" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 414
    r = gw.request("GET", "/lm/x")
    assert r.status == 200, r
