"""Endpoint groups and backend failures: load_balance, failover, connect refused (502),
timeout (504), etcd-style entries without etcd configured."""

import time

from harness import SLOW, fault, free_port, openapi


def test_load_balance_rotates(gateway, backend):
    b1, b2 = backend("b1"), backend("b2")
    doc = openapi("/lb", {"/x": {"get": None}},
                  endpoints={"type": "load_balance", "urls": [b1.url, b2.url]})
    g = gateway([doc])
    seen = []
    for _ in range(6):
        r = g.request("GET", "/lb/x")
        assert r.status == 200, r
        seen.append(r.echo()["backend"])
    assert seen.count("b1") == 3 and seen.count("b2") == 3, seen
    assert all(seen[i] != seen[i + 1] for i in range(len(seen) - 1)), seen


def test_load_balance_via_named_reference(gateway, backend):
    b1, b2 = backend("b1"), backend("b2")
    doc = openapi("/lbn", {"/x": {"get": {
        "x-wso2-production-endpoints": "#/x-wso2-endpoints/pool"}}},
        extra={"x-wso2-endpoints": [{"pool": {"type": "load_balance",
                                               "urls": [b1.url + "/one", b2.url + "/two"]}}]})
    g = gateway([doc])
    targets = set()
    for _ in range(4):
        r = g.request("GET", "/lbn/x")
        assert r.status == 200, r
        e = r.echo()
        targets.add((e["backend"], e["target"]))
    assert targets == {("b1", "/one/x"), ("b2", "/two/x")}


def test_failover_to_second_when_first_refuses(gateway, backend):
    dead = free_port()
    b2 = backend("b2")
    doc = openapi("/fo", {"/x": {"get": None, "post": None}},
                  endpoints={"type": "failover",
                             "urls": ["http://127.0.0.1:%d/dead" % dead, b2.url + "/live"]})
    g = gateway([doc])
    for i in range(3):
        r = g.request("GET", "/fo/x?i=%d" % i)
        assert r.status == 200, r
        assert r.echo()["target"] == "/live/x?i=%d" % i
    r = g.request("POST", "/fo/x", body=b"payload")
    assert r.status == 200, r
    assert r.echo()["body"] == "payload"


def test_failover_prefers_first(gateway, backend):
    b1, b2 = backend("b1"), backend("b2")
    doc = openapi("/fo2", {"/x": {"get": None}},
                  endpoints={"type": "failover", "urls": [b1.url, b2.url]})
    g = gateway([doc])
    for _ in range(4):
        r = g.request("GET", "/fo2/x")
        assert r.status == 200, r
        assert r.echo()["backend"] == "b1"


def test_connect_refused_502(gateway):
    dead = free_port()
    doc = openapi("/cr", {"/x": {"get": None}}, endpoints=["http://127.0.0.1:%d" % dead])
    g = gateway([doc])
    t0 = time.monotonic()
    r = g.request("GET", "/cr/x")
    assert r.status == 502, r
    code, msg, desc = fault(r)
    assert code == 101503, r
    assert r.header("Content-Type", "").startswith("application/json")
    assert time.monotonic() - t0 < 5 * SLOW


def test_all_failover_endpoints_down(gateway):
    doc = openapi("/cr2", {"/x": {"get": None}},
                  endpoints={"type": "failover",
                             "urls": ["http://127.0.0.1:%d" % free_port(),
                                      "http://127.0.0.1:%d" % free_port()]})
    g = gateway([doc])
    r = g.request("GET", "/cr2/x")
    assert r.status in (502, 503), r
    code, _, _ = fault(r)
    assert code in (101503, 101505, 101500) or r.status == 503


def test_backend_timeout_504(gateway, backend):
    b = backend("slow")
    doc = openapi("/to", {"/x": {"get": None}},
                  endpoints={"urls": [b.url], "advanceEndpointConfig": {"timeoutInMillis": 300}})
    g = gateway([doc])
    t0 = time.monotonic()
    r = g.request("GET", "/to/x", headers=[("X-Test-Mode", "hang")])
    dt = time.monotonic() - t0
    assert r.status == 504, r
    code, _, _ = fault(r)
    assert code == 101504, r
    assert 0.25 <= dt < 3 * SLOW, dt
    # the gateway is still healthy and the endpoint still usable
    r = g.request("GET", "/to/x")
    assert r.status == 200, r


def test_backend_slow_but_within_timeout(gateway, backend):
    b = backend("slow")
    doc = openapi("/to2", {"/x": {"get": None}},
                  endpoints={"urls": [b.url], "advanceEndpointConfig": {"timeoutInMillis": 2000}})
    g = gateway([doc])
    r = g.request("GET", "/to2/x", headers=[("X-Test-Mode", "delay=300")])
    assert r.status == 200, r


def test_delayed_answer_beyond_timeout_504(gateway, backend):
    b = backend("slow")
    doc = openapi("/to3", {"/x": {"get": None}},
                  endpoints={"urls": [b.url], "advanceEndpointConfig": {"timeoutInMillis": 300}})
    g = gateway([doc])
    r = g.request("GET", "/to3/x", headers=[("X-Test-Mode", "delay=1500")])
    assert r.status == 504, r
    assert fault(r)[0] == 101504
    # the late answer must not end up as the response to the next request
    time.sleep(1.5)
    r = g.request("GET", "/to3/x?second=1")
    assert r.status == 200, r
    assert r.echo()["target"] == "/x?second=1"


def test_etcd_entry_uses_default_without_etcd(gateway, backend):
    b = backend("dflt")
    doc = openapi("/ed", {"/x": {"get": None}},
                  endpoints=["etcd (some-key, %s/default)" % b.url])
    g = gateway([doc])
    r = g.request("GET", "/ed/x")
    assert r.status == 200, r
    assert r.echo()["target"] == "/default/x"


def test_failing_endpoint_logged_once_and_recovery(gateway, backend):
    """A backend that refuses connections is logged when it starts failing and
    when it answers again, not once per request."""
    port = free_port()
    doc = openapi("/flap", {"/x": {"get": None}}, endpoints=["http://127.0.0.1:%d" % port])
    g = gateway([doc])
    for _ in range(5):
        assert g.request("GET", "/flap/x").status == 502
    err = g.stderr()
    assert err.count("connect failed") == 1, err
    b = backend("flap", port=port)
    r = g.request("GET", "/flap/x")
    assert r.status == 200, r
    assert g.request("GET", "/flap/x").status == 200
    err = g.stderr()
    assert err.count("answers again") == 1, err
    b.stop()
    assert g.request("GET", "/flap/x").status == 502
    assert g.stderr().count("connect failed") == 2, g.stderr()
