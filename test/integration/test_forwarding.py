"""Forwarding: methods and bodies, path/query/header passthrough, Host, X-Forwarded-*,
hop-by-hop headers in both directions."""

import pytest

from harness import HttpConn, openapi

ALL = ["get", "head", "post", "put", "delete", "patch", "options"]


@pytest.fixture
def gw(gateway, backend):
    b = backend("b1")
    doc = openapi("/fw/v1", {
        "/things": {m: None for m in ALL},
        "/things/{id}": {m: None for m in ALL},
    }, endpoints=[b.url + "/api"])
    g = gateway([doc])
    g.backend = b
    return g


def last_seen(b):
    return b.requests()[-1]


def hmap(e):
    m = {}
    for n, v in e["headers"]:
        m.setdefault(n.lower(), []).append(v)
    return m


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS", "POST", "PUT", "PATCH"])
def test_method_without_body(gw, method):
    r = gw.request(method, "/fw/v1/things/42?a=1")
    assert r.status == 200, r
    e = r.echo()
    assert e["method"] == method
    assert e["target"] == "/api/things/42?a=1"
    assert e["body_len"] == 0
    # no body: no chunked framing invented, Content-Length absent or 0
    cl = e["hmap"].get("content-length", ["0"])
    assert cl == ["0"], e["headers"]
    assert "transfer-encoding" not in e["hmap"], e["headers"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "GET"])
def test_method_with_body(gw, method):
    body = ('{"method":"%s","data":"%s"}' % (method, "x" * 3000)).encode()
    r = gw.request(method, "/fw/v1/things", headers=[("Content-Type", "application/json")],
                   body=body)
    assert r.status == 200, r
    e = r.echo()
    assert e["method"] == method
    assert e["body_bytes"] == body
    assert e["framing"] in ("content-length", "chunked")
    if e["framing"] == "content-length":
        assert e["hmap"]["content-length"] == [str(len(body))]
    assert e["hmap"]["content-type"] == ["application/json"]


def test_patch_and_delete_body_framed_with_content_length(gw):
    """evhttp's client drops Content-Length for PATCH/DELETE bodies: the gateway must
    frame them (the backend must not need to guess)."""
    for method in ("PATCH", "DELETE"):
        body = b'{"op":"replace","path":"/name","value":"rex"}'
        r = gw.request(method, "/fw/v1/things/7", body=body)
        assert r.status == 200, r
        e = r.echo()
        assert e["framing"] in ("content-length", "chunked"), e
        assert e["body_bytes"] == body


def test_binary_body_intact(gw):
    body = bytes(range(256)) * 64
    r = gw.request("POST", "/fw/v1/things", body=body,
                   headers=[("Content-Type", "application/octet-stream")])
    assert r.status == 200, r
    assert r.echo()["body_bytes"] == body


def test_chunked_request_body_forwarded(gw):
    body = b"chunk-one|chunk-two|chunk-three" * 50
    with gw.conn() as c:
        r = c.request("POST", "/fw/v1/things", body=body, chunked=True)
    assert r is not None and r.status == 200, r
    e = r.echo()
    assert e["body_bytes"] == body
    assert e["framing"] in ("content-length", "chunked")


def test_head_request(gw):
    with gw.conn() as c:
        r = c.request("HEAD", "/fw/v1/things/1")
        assert r.status == 200, r
        assert r.body == b""
        assert r.header("X-Echo-Method") == "HEAD"
        # The connection is still in sync: a GET after the HEAD gets its own response.
        r2 = c.request("GET", "/fw/v1/things/2")
        assert r2 is not None and r2.status == 200, r2
        assert r2.echo()["target"] == "/api/things/2"
    assert last_seen(gw.backend)["method"] == "GET"
    assert gw.backend.requests()[-2]["method"] == "HEAD"


def test_path_and_query_byte_for_byte(gw):
    q = "a=1&b=%20x+y&c=%2F%3F&&d&e=%E2%82%AC&f=a=b&g=%zz"
    r = gw.request("GET", "/fw/v1/things/it%20em?" + q)
    assert r.status == 200, r
    assert r.echo()["target"] == "/api/things/it%20em?" + q


def test_empty_query_kept(gw):
    r = gw.request("GET", "/fw/v1/things/5?")
    assert r.status == 200, r
    assert r.echo()["target"] == "/api/things/5?"


def test_request_headers_passthrough(gw):
    hdrs = [("X-Custom", "one"), ("X-Multi", "a"), ("X-Multi", "b"),
            ("Authorization", "Bearer abc.def"), ("Accept", "application/json"),
            ("User-Agent", "mgw-test/1.0"), ("Cookie", "a=1; b=2")]
    r = gw.request("GET", "/fw/v1/things/1", headers=hdrs)
    assert r.status == 200, r
    e = r.echo()
    m = e["hmap"]
    assert m["x-custom"] == ["one"]
    # repeated headers: both values arrive, in order (possibly folded into one line)
    multi = ",".join(m["x-multi"]).replace(" ", "")
    assert multi == "a,b", m.get("x-multi")
    assert m["authorization"] == ["Bearer abc.def"]
    assert m["accept"] == ["application/json"]
    assert m["user-agent"] == ["mgw-test/1.0"]
    assert m["cookie"] == ["a=1; b=2"]


def test_host_rewritten_to_backend_authority(gw):
    r = gw.request("GET", "/fw/v1/things/1", headers=[("Host", "api.example.com")])
    assert r.status == 200, r
    m = r.echo()["hmap"]
    assert m["host"] == ["127.0.0.1:%d" % gw.backend.port]


def test_x_forwarded_headers(gw):
    r = gw.request("GET", "/fw/v1/things/1", headers=[("Host", "api.example.com:8443")])
    assert r.status == 200, r
    m = r.echo()["hmap"]
    assert m.get("x-forwarded-for") == ["127.0.0.1"], m
    assert m.get("x-forwarded-proto") == ["http"], m
    assert m.get("x-forwarded-host") == ["api.example.com:8443"], m


def test_x_forwarded_for_appends_to_client_value(gw):
    r = gw.request("GET", "/fw/v1/things/1", headers=[("X-Forwarded-For", "203.0.113.7")])
    assert r.status == 200, r
    xff = r.echo()["hmap"].get("x-forwarded-for")
    assert xff is not None and len(xff) == 1, xff
    parts = [p.strip() for p in xff[0].split(",")]
    assert parts[-1] == "127.0.0.1", xff


def test_hop_by_hop_request_headers_removed(gw):
    hdrs = [("Connection", "keep-alive, X-Hop-Req"), ("X-Hop-Req", "secret"),
            ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
            ("Trailer", "X-Foo"), ("Upgrade", "h2c"), ("X-End-To-End", "kept")]
    r = gw.request("GET", "/fw/v1/things/1", headers=hdrs)
    assert r.status == 200, r
    m = r.echo()["hmap"]
    for h in ("x-hop-req", "keep-alive", "proxy-authorization", "proxy-connection", "te",
              "trailer", "upgrade"):
        assert h not in m, (h, r.echo()["headers"])
    for v in m.get("connection", []):
        assert {t.strip().lower() for t in v.split(",")} <= {"keep-alive", "close"}, v
    assert m["x-end-to-end"] == ["kept"]


def test_hop_by_hop_response_headers_removed(gw):
    r = gw.request("GET", "/fw/v1/things/1", headers=[("X-Test-Mode", "hop")])
    assert r.status == 200, r
    for h in ("X-Hop", "Proxy-Foo", "Trailer", "Upgrade", "Keep-Alive"):
        assert not r.has(h), (h, r.headers)
    for v in r.header_all("Connection"):
        assert {t.strip().lower() for t in v.split(",")} <= {"keep-alive", "close"}, v
    assert r.header("X-Normal") == "yes"
    assert r.header("X-Backend") == "b1"
    r.echo()  # body intact


def test_response_headers_passthrough(gw):
    r = gw.request("GET", "/fw/v1/things/1",
                   headers=[("X-Test-Mode", "header=X-Resp-One:1;header=Set-Cookie:a=1;"
                                            "header=Set-Cookie:b=2;status=201")])
    assert r.status == 201, r
    assert r.header("X-Resp-One") == "1"
    assert r.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert r.header("Content-Type") == "application/json"


def test_keep_alive_client_connection(gw):
    with HttpConn(gw.port) as c:
        for i in range(5):
            r = c.request("GET", "/fw/v1/things/%d" % i)
            assert r is not None and r.status == 200, r
            assert r.echo()["target"] == "/api/things/%d" % i


def test_content_length_and_chunked_together(gw):
    """RFC 9112 6.1: Transfer-Encoding overrides Content-Length (or the request is
    rejected); the backend must never see a CL-framed cut of a chunked body."""
    with HttpConn(gw.port) as c:
        c.send_raw(b"POST /fw/v1/things HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
    assert r is not None, "no response"
    assert r.status in (200, 400), r
    recs = gw.backend.requests()
    if r.status == 200:
        assert r.echo()["body"] == "hello", r
        assert len(recs) == 1, recs
    else:
        assert recs == [], recs


def test_conflicting_content_lengths_rejected(gw):
    with HttpConn(gw.port) as c:
        c.send_raw(b"POST /fw/v1/things HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                   b"Content-Length: 5\r\n\r\nhello")
        r = c.read_response()
    assert r is not None and r.status == 400, r
    assert gw.backend.requests() == []


def test_expect_100_continue(gw):
    with HttpConn(gw.port, timeout=5) as c:
        c.send_raw(b"PUT /fw/v1/things HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                   b"Expect: 100-continue\r\n\r\n")
        # a client waits a little for 100 Continue, then sends the body anyway
        c.sock.settimeout(1.0)
        try:
            c._more()
        except OSError:
            pass
        c.sock.settimeout(5)
        c.send_raw(b"hello")
        r = c.read_response()
    assert r is not None and r.status == 200, r
    e = r.echo()
    assert e["body"] == "hello"
    assert "expect" not in e["hmap"] or e["hmap"]["expect"] == ["100-continue"]
