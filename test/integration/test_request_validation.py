"""What evhttp lets through but a proxy must refuse (RFC 9112): malformed
header names, control bytes, spaces in the target, Host rules, transfer codings
other than chunked; and an access log that request text cannot forge."""
import pytest

from harness import HttpConn, openapi


@pytest.fixture
def gw(gateway, backend):
    b = backend("rv")
    g = gateway([openapi("/rv", {"/{a}": {"get": None, "post": None}}, endpoints=[b.url])])
    g.backend = b
    return g


def raw(g, data):
    with HttpConn(g.port) as c:
        c.send_raw(data)
        r = c.read_head()
        if r is not None:
            c.read_body(r)
        return r


@pytest.mark.parametrize("head", [
    b"POST /rv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /rv/a HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n",
    b"GET /rv/a HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
    b"GET /rv/a X-Injected: 1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /rv/a?x=\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /rv/a HTTP/1.1\r\n\r\n",
    b"GET /rv/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"POST /rv/a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    b"POST /rv/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
])
def test_refused_with_400_and_never_forwarded(gw, head):
    r = raw(gw, head)
    assert r is not None and r.status == 400, r
    assert r.json()["fault"]["code"] == 900400
    assert r.header("Connection", "").lower() == "close"
    assert gw.backend.requests() == [], gw.backend.requests()


def test_http10_without_host_is_fine(gw):
    r = raw(gw, b"GET /rv/a HTTP/1.0\r\n\r\n")
    assert r is not None and r.status == 200, r


def test_access_log_escapes_request_text(gw):
    r = raw(gw, b'GET /rv/a?q=%22"\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n')
    assert r is not None and r.status == 400
    line = [l for l in gw.stdout().splitlines() if "rid=" in l][-1]
    assert "\x1b" not in line and '\\x22' in line and '\\x1B' in line, repr(line)
    assert line.count('"') == 2, repr(line)


SMUGGLED = b"GET /rv/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("te, body", [
    (b"gzip", SMUGGLED),
    (b"gzip, chunked", SMUGGLED),
    (b"chunked, gzip", SMUGGLED),
    (b"identity", SMUGGLED),
    (b"chunked\r\nTransfer-Encoding: gzip", CHUNKED + SMUGGLED),
    (b"chunked\r\nTransfer-Encoding: chunked", CHUNKED + SMUGGLED),
])
def test_transfer_coding_not_chunked_501_and_connection_closed(gw, te, body):
    """Whatever follows the head is never parsed as a request: the smuggled GET
    never reaches the backend, and nothing answers it."""
    with HttpConn(gw.port) as c:
        c.send_raw(b"POST /rv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n" + body)
        r = c.read_response()
        assert r is not None and r.status == 501, r
        assert r.json()["fault"]["code"] == 900501
        assert r.header("Connection", "").lower() == "close"
        assert c.read_head() is None and c.eof and c.buf == b"", c.buf
    assert gw.backend.requests() == [], gw.backend.requests()


@pytest.mark.parametrize("head, body", [
    (b"POST /rv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", SMUGGLED),
    (b"POST /rv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", CHUNKED + SMUGGLED),
    (b"HEAD /rv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", CHUNKED + SMUGGLED),
])
def test_pipelined_transfer_coding_501_and_connection_closed(gw, head, body):
    """Behind a request in the same packet, evhttp reads the head itself: what
    it did not read as chunks still never becomes a request."""
    with HttpConn(gw.port) as c:
        c.send_raw(b"GET /rv/first HTTP/1.1\r\nHost: x\r\n\r\n" + head + body)
        r = c.read_response()
        assert r is not None and r.status == 200, r
        r = c.read_response("HEAD" if head.startswith(b"HEAD") else "GET")
        assert r is not None and r.status == 501, r
        assert r.header("Connection", "").lower() == "close"
        assert c.read_head() is None and c.eof and c.buf == b"", c.buf
    assert [e["target"] for e in gw.backend.requests()] == ["/first"]


def test_body_evhttp_does_not_read_400_and_connection_closed(gw):
    """evhttp reads no body for HEAD: the declared bytes must not become a request."""
    with HttpConn(gw.port) as c:
        c.send_raw(b"HEAD /rv/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
                   + SMUGGLED)
        r = c.read_response("HEAD")
        assert r is not None and r.status == 400, r
        assert r.header("Connection", "").lower() == "close"
        assert c.read_head() is None and c.eof and c.buf == b"", c.buf
    assert gw.backend.requests() == [], gw.backend.requests()


@pytest.mark.parametrize("te", [b"chunked", b"Chunked", b"  CHUNKED  "])
def test_transfer_coding_chunked_forwarded(gw, te):
    r = raw(gw, b"POST /rv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n" + CHUNKED)
    assert r is not None and r.status == 200, r
    assert r.echo()["body"] == "hello"


def test_fault_to_head_has_no_body(gw):
    """A gateway error answering HEAD is a head only: the next response on the
    connection starts right after it."""
    with HttpConn(gw.port) as c:
        r = c.request("HEAD", "/nope")
        assert r is not None and r.status == 404, r
        r = c.request("GET", "/rv/a")
        assert r is not None and r.status == 200, r
