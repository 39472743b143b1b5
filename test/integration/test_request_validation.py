"""What evhttp lets through but a proxy must refuse (RFC 9112): malformed
header names, control bytes, spaces in the target, Host rules; and an access
log that request text cannot forge."""
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
