"""The test backend itself (no gateway): modes and control paths behave as documented,
so a failing gateway test points at the gateway."""

import time

from harness import HttpConn, request


def test_echo_and_stats(backend):
    b = backend("self")
    r = request(b.port, "POST", "/a/b?c=%2F", headers=[("X-A", "1")], body=b"hello")
    assert r.status == 200
    e = r.echo()
    assert (e["method"], e["target"], e["body"], e["backend"]) == ("POST", "/a/b?c=%2F",
                                                                   "hello", "self")
    assert e["hmap"]["x-a"] == ["1"]
    with HttpConn(b.port) as c:
        for i in range(3):
            assert c.request("GET", "/k%d" % i).echo()["req_no_on_conn"] == i + 1
    st = b.stats()
    assert st["requests"] == 4 and st["connections"] == 2, st


def test_modes(backend):
    b = backend("self")
    r = request(b.port, "GET", "/", headers=[("X-Test-Mode", "interim=100,103;status=201")])
    assert r.status == 201 and [c for c, _ in r.interim] == [100, 103]
    r = request(b.port, "GET", "/", headers=[("X-Test-Mode", "no-length;big=1000")])
    assert r.framing == "close" and len(r.body) == 1000
    r = request(b.port, "GET", "/", headers=[("X-Test-Mode", "chunked")])
    assert r.framing == "chunked" and r.complete and r.echo()["target"] == "/"
    r = request(b.port, "GET", "/__mode/no-length/x")
    assert r.framing == "close"
    r = request(b.port, "GET", "/", headers=[("X-Test-Mode", "hop")])
    assert r.header("X-Hop") and r.header("X-Normal") == "yes"
    with HttpConn(b.port, timeout=3) as c:
        c.send("GET", "/", [("X-Test-Mode", "close")])
        assert c.read_response() is None
    with HttpConn(b.port, timeout=3) as c:
        r = c.request("GET", "/", [("X-Test-Mode", "close-mid-body")])
        assert r.status == 200 and not r.complete
    with HttpConn(b.port, timeout=3) as c:
        assert c.request("GET", "/", [("X-Test-Mode", "close-next")]).status == 200
        c.send("GET", "/again")
        assert c.read_response() is None
    assert b.requests()[-1].get("stale")
    t0 = time.monotonic()
    assert request(b.port, "GET", "/", headers=[("X-Test-Mode", "delay=200")]).status == 200
    assert time.monotonic() - t0 >= 0.2


def test_gate(backend):
    b = backend("self")
    with HttpConn(b.port, timeout=5) as c:
        c.send("GET", "/", [("X-Test-Mode", "gate=g1")])
        r = c.read_head()
        while b"first-piece" not in c.buf:
            c._more()
        b.release("g1")
        c.read_body(r)
        assert r.complete and r.body.startswith(b"first-piece\n")
