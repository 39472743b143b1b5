"""Clients and backends that go away at awkward moments, pipelining, HTTP/1.0: the
gateway survives (the sanitizer build checks for leaks and use-after-free at exit)."""

import socket
import time

import pytest

from harness import SLOW, HttpConn, openapi


@pytest.fixture
def gw(gateway, backend):
    b = backend("rb")
    doc = openapi("/rb", {"/x": {"get": None, "post": None}}, endpoints=[b.url],
                  )
    g = gateway([doc])
    g.backend = b
    return g


def test_client_gone_while_backend_hangs(gw):
    for _ in range(3):
        c = HttpConn(gw.port)
        c.send("GET", "/rb/x", [("X-Test-Mode", "delay=700")])
        time.sleep(0.1)
        c.close()
    time.sleep(1.0)
    r = gw.request("GET", "/rb/x?after")
    assert r.status == 200, r
    assert r.echo()["target"] == "/x?after"
    assert gw.alive()


def test_client_gone_during_large_response(gw):
    for _ in range(3):
        c = HttpConn(gw.port)
        c.send("GET", "/rb/x", [("X-Test-Mode", "stream=20,20;big=8000000")])
        r = c.read_head()
        assert r is not None and r.status == 200
        c.sock.recv(1000)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()   # RST
    time.sleep(0.5)
    r = gw.request("GET", "/rb/x?after")
    assert r.status == 200, r
    assert gw.alive()


def test_client_gone_while_sending_body(gw):
    c = HttpConn(gw.port)
    c.send_raw(b"POST /rb/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000)
    time.sleep(0.2)
    c.close()
    time.sleep(0.3)
    r = gw.request("POST", "/rb/x", body=b"ok")
    assert r.status == 200, r
    assert gw.alive()


def test_pipelined_requests(gw):
    with HttpConn(gw.port) as c:
        data = b"".join(b"GET /rb/x?p=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        c.send_raw(data)
        for i in range(5):
            r = c.read_response()
            assert r is not None and r.status == 200, (i, r)
            assert r.echo()["target"] == "/x?p=%d" % i


def test_http10_client(gw):
    with HttpConn(gw.port) as c:
        c.send_raw(b"GET /rb/x?v=10 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r is not None and r.status == 200, r
        assert r.echo()["target"] == "/x?v=10"
        assert r.complete
        # the gateway closes an HTTP/1.0 connection without keep-alive
        c.sock.settimeout(3 * SLOW)
        assert c.buf == b"" and not c._more()


def test_many_concurrent_connections(gw):
    conns = []
    try:
        for i in range(100):
            c = HttpConn(gw.port)
            c.send("GET", "/rb/x?n=%d" % i)
            conns.append(c)
        for i, c in enumerate(conns):
            r = c.read_response()
            assert r is not None and r.status == 200, (i, r)
            assert r.echo()["target"] == "/x?n=%d" % i
    finally:
        for c in conns:
            c.close()
