"""Backend connection pool: keep-alive reuse, retry of idempotent requests on a stale
reused connection, no retry for POST/PATCH."""

import time

import pytest

from harness import HttpConn, fault, openapi


@pytest.fixture
def gw(gateway, backend):
    b = backend("pool")
    doc = openapi("/pl", {"/x": {m: None for m in ("get", "head", "post", "put", "delete",
                                                    "patch", "options")}},
                  endpoints=[b.url])
    g = gateway([doc])
    g.backend = b
    return g


def test_sequential_requests_reuse_one_backend_connection(gw):
    for i in range(20):
        r = gw.request("GET", "/pl/x?i=%d" % i)   # a new client connection each time
        assert r.status == 200, r
    with HttpConn(gw.port) as c:
        for i in range(20):
            r = c.request("POST", "/pl/x", body=b"n=%d" % i)
            assert r.status == 200, r
    st = gw.backend.stats()
    assert st["requests"] == 40
    assert st["connections"] <= 2, st


def test_backend_connection_close_honoured(gw):
    """A backend answer with 'Connection: close' must not be reused."""
    for i in range(5):
        r = gw.request("POST", "/pl/x?i=%d" % i, body=b"x",
                       headers=[("X-Test-Mode", "conn-close")])
        assert r.status == 200, r
        assert r.echo()["target"] == "/x?i=%d" % i
    r = gw.request("POST", "/pl/x?after", body=b"y")
    assert r.status == 200, r
    assert gw.backend.stats()["connections"] == 6


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_stale_connection_retried_for_idempotent(gw, method):
    r = gw.request("GET", "/pl/x?prime", headers=[("X-Test-Mode", "close-next")])
    assert r.status == 200, r
    assert gw.backend.stats()["connections"] == 1
    body = b"idempotent" if method in ("PUT", "DELETE") else None
    with HttpConn(gw.port) as c:
        r = c.request(method, "/pl/x?second", body=body)
    assert r is not None and r.status == 200, r
    recs = gw.backend.requests()
    # the backend saw the request twice: on the stale connection, then on a fresh one
    tries = [q for q in recs if q["target"] == "/x?second"]
    assert len(tries) == 2, recs
    assert tries[0].get("stale") and not tries[1].get("stale")
    assert tries[0]["conn_id"] != tries[1]["conn_id"]
    assert tries[1]["method"] == method
    if body:
        assert tries[1]["body"] == body.decode()
    assert gw.backend.stats()["connections"] == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_stale_connection_not_retried_for_non_idempotent(gw, method):
    r = gw.request("GET", "/pl/x?prime", headers=[("X-Test-Mode", "close-next")])
    assert r.status == 200, r
    r = gw.request(method, "/pl/x?second", body=b"once-only")
    assert r.status == 502, r
    assert fault(r)[0] == 101503
    tries = [q for q in gw.backend.requests() if q["target"] == "/x?second"]
    assert len(tries) == 1, tries
    # the gateway recovers: the next request opens a fresh connection
    r = gw.request(method, "/pl/x?third", body=b"x")
    assert r.status == 200, r


def test_backend_idle_close_detected(gw):
    """The backend closes idle keep-alive connections: later requests still succeed."""
    for i in range(3):
        r = gw.request("GET", "/pl/x?i=%d" % i, headers=[("X-Test-Mode", "close-after")])
        assert r.status == 200, r
        time.sleep(0.2)
    for m in ("GET", "POST"):
        r = gw.request(m, "/pl/x?final", body=b"x" if m == "POST" else None)
        assert r.status == 200, r


def test_concurrent_clients(gw):
    conns = [HttpConn(gw.port) for _ in range(20)]
    try:
        for i, c in enumerate(conns):
            c.send("GET", "/pl/x?c=%d" % i, [("X-Test-Mode", "delay=100")])
        for i, c in enumerate(conns):
            r = c.read_response()
            assert r is not None and r.status == 200, r
            assert r.echo()["target"] == "/x?c=%d" % i
    finally:
        for c in conns:
            c.close()
