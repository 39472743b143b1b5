"""Backend responses relayed to the client: broken backends (502), framing (no
Content-Length, chunked, Content-Length kept, transfer codings and chunk sizes
refused), streaming, 204/304/HEAD, interim 1xx."""

import socket
import time

import pytest

from harness import SLOW, HttpConn, fault, openapi


@pytest.fixture
def gw(gateway, backend):
    b = backend("b1")
    doc = openapi("/rs", {"/x": {m: None for m in ("get", "head", "post", "put", "delete")},
                          "/x/{id}": {"get": None, "head": None}},
                  endpoints=[b.url])
    g = gateway([doc])
    g.backend = b
    return g


def pattern(n):
    return bytes(i % 251 for i in range(n))


def test_backend_closes_before_response_502(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "close")])
    assert r.status == 502, r
    assert fault(r)[0] == 101503


def test_backend_garbage_502(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "garbage")])
    assert r.status == 502, r
    assert fault(r)[0] == 101503
    r = gw.request("GET", "/rs/x")
    assert r.status == 200, r


def test_backend_closes_mid_body(gw):
    """Headers sent, then the backend dies: the client must not get a complete-looking
    response (either a 502, or a truncated body on a closed connection), and promptly."""
    t0 = time.monotonic()
    with HttpConn(gw.port) as c:
        c.send("GET", "/rs/x", [("X-Test-Mode", "close-mid-body")])
        r = c.read_head()
        assert r is not None, "no response at all"
        if r.status == 502:
            assert fault(c.read_body(r))[0] == 101503
        else:
            assert r.status == 200, r
            c.read_body(r)
            assert not r.complete, r
            assert r.body.startswith(b"0123456789") or r.body == b""
            # the client connection is closed, not left hanging
            assert c.eof or not c._more()
    assert time.monotonic() - t0 < 5 * SLOW
    r = gw.request("GET", "/rs/x")
    assert r.status == 200, r


@pytest.mark.parametrize("mode", ["te=gzip, chunked", "te=gzip", "te=chunked, chunked",
                                  "te=chunked;header=Transfer-Encoding:chunked", "nul-header"])
def test_backend_head_refused_502_and_connection_dropped(gw, mode):
    """A coding other than chunked alone would be lost in the re-chunking; a NUL
    would cut a header short. The backend connection is not pooled after it."""
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", mode)], timeout=5)
    assert r.status == 502, r
    assert fault(r)[0] == 101503
    first = gw.backend.requests()[-1]["conn_id"]
    r = gw.request("GET", "/rs/x")
    assert r.status == 200, r
    assert r.echo()["conn_id"] != first


@pytest.mark.parametrize("te", ["chunked", "CHUNKED"])
def test_backend_transfer_coding_chunked_any_case(gw, te):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "te=" + te)])
    assert r.status == 200 and r.complete, r
    assert r.echo()["target"] == "/x"


@pytest.mark.parametrize("size", ["0x5", "-0", "+5", "%205", "5%00", "5x", "10000000000000000"])
def test_backend_malformed_chunk_size_cuts_the_response(gw, size):
    """Nothing after the bad size line is relayed, and the client cannot take the
    response for complete: the connection is cut as for a backend reset."""
    with HttpConn(gw.port, timeout=5) as c:
        c.send("GET", "/rs/x", [("X-Test-Mode", "chunk-size=" + size)])
        r = c.read_head()
        if r is not None:
            assert r.status == 200, r
            c.read_body(r)
            assert not r.complete and r.body == b"", r
        assert c.eof or not c._more()


@pytest.mark.parametrize("size", ["5", "05", "5%3Bname=value", "5%20%09%3Bname", "5%20"])
def test_backend_chunk_size_with_extensions(gw, size):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "chunk-size=" + size)])
    assert r.status == 200 and r.complete, r
    assert r.body == b"hello"


def test_no_content_length_close_delimited(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "no-length;big=200000")])
    assert r.status == 200, r
    assert r.complete
    assert len(r.body) == 200000
    assert r.body == pattern(200000)


def test_chunked_backend(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "chunked;big=50000")])
    assert r.status == 200, r
    assert r.complete
    assert r.body == pattern(50000)


def test_chunked_backend_keeps_connection_usable(gw):
    with HttpConn(gw.port) as c:
        r = c.request("GET", "/rs/x", [("X-Test-Mode", "chunked")])
        assert r.status == 200 and r.complete, r
        assert r.echo()["target"] == "/x"
        r = c.request("GET", "/rs/x?n=2")
        assert r.status == 200, r
        assert r.echo()["target"] == "/x?n=2"


def test_content_length_kept(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "big=123457")])
    assert r.status == 200, r
    assert r.header("Content-Length") == "123457", r.headers
    assert not r.has("Transfer-Encoding"), r.headers
    assert r.body == pattern(123457)


@pytest.mark.parametrize("extra", ["", ";big=70000"])
def test_head_split_across_reads(gw, extra):
    """A head that arrives in pieces is parsed once whole, however the reads fall."""
    with HttpConn(gw.port) as c:
        for i in range(2):
            r = c.request("GET", "/rs/x/%d" % i, [("X-Test-Mode", "split-head" + extra)])
            assert r is not None and r.status == 200, r
            assert r.header("X-Backend") == "b1", r.headers
            if extra:
                assert r.body == pattern(70000)
            else:
                assert r.echo()["target"] == "/x/%d" % i


def test_large_body_both_ways(gw):
    body = pattern(3 * 1024 * 1024)
    r = gw.request("POST", "/rs/x", body=body,
                   headers=[("X-Test-Mode", "big=%d" % (4 * 1024 * 1024))], timeout=30)
    assert r.status == 200, r
    assert r.body == pattern(4 * 1024 * 1024)
    rec = gw.backend.requests()[-1]
    assert rec["body_len"] == len(body)


def test_streaming_first_piece_before_backend_finishes(gw):
    """The backend sends its head and a first piece, then waits for a release that the
    test sends only after the client has seen the first piece."""
    token = "tok%d" % time.monotonic_ns()
    with HttpConn(gw.port, timeout=5) as c:
        c.send("GET", "/rs/x", [("X-Test-Mode", "gate=" + token)])
        r = c.read_head()
        assert r is not None and r.status == 200, r
        deadline = time.monotonic() + 4
        while b"first-piece\n" not in c.buf and time.monotonic() < deadline:
            try:
                if not c._more():
                    break
            except socket.timeout:
                break
        got_first = b"first-piece\n" in c.buf
        gw.backend.release(token)
        assert got_first, "first piece not relayed before the backend finished: %r" % c.buf
        c.read_body(r)
        assert r.complete
        assert r.body == b"first-piece\n" + b"rest-of-the-body\n" * 4


def test_streaming_pieces(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "stream=5,50;big=5000")])
    assert r.status == 200, r
    assert r.body == pattern(5000)


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("bogus", [False, True])
def test_no_body_statuses(gw, status, bogus):
    mode = "status=%d%s" % (status, ";bogus-body" if bogus else "")
    with HttpConn(gw.port) as c:
        c.send("GET", "/rs/x", [("X-Test-Mode", mode)])
        r = c.read_head()
        assert r is not None and r.status == status, r
        c.read_body(r)
        # whatever the backend did, the client connection stays in sync: the next
        # response on it is the right one and starts right after the head
        r2 = c.request("GET", "/rs/x?after=%d" % status)
        assert r2 is not None and r2.status == 200, (r2, c.buf)
        assert r2.echo()["target"] == "/x?after=%d" % status
    # and the gateway's backend connection is not poisoned either
    for i in range(3):
        r3 = gw.request("GET", "/rs/x?again=%d" % i)
        assert r3.status == 200, r3
        assert r3.echo()["target"] == "/x?again=%d" % i


def test_head_no_body(gw):
    with HttpConn(gw.port) as c:
        r = c.request("HEAD", "/rs/x/1", [("X-Test-Mode", "big=5000")])
        assert r.status == 200, r
        assert r.header("Content-Length") in (None, "5000"), r.headers
        r2 = c.request("GET", "/rs/x/2")
        assert r2 is not None and r2.status == 200, r2
        assert r2.echo()["target"] == "/x/2"


@pytest.mark.parametrize("interim", ["100", "103", "100,103", "103,103"])
def test_interim_responses_not_final(gw, interim):
    with HttpConn(gw.port) as c:
        r = c.request("GET", "/rs/x?first=1", [("X-Test-Mode", "interim=" + interim)])
        assert r is not None and r.status == 200, r
        assert r.echo()["target"] == "/x?first=1"
        for code, _ in r.interim:
            assert code in (100, 103), r.interim
    # A second request, through the (pooled) backend connection gets its own response.
    for i in range(3):
        r2 = gw.request("GET", "/rs/x?second=%d" % i)
        assert r2.status == 200, r2
        assert r2.echo()["target"] == "/x?second=%d" % i


def test_interim_then_error_status(gw):
    r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "interim=103;status=404")])
    assert r.status == 404, r
    r.echo()


def test_backend_error_status_passed_through(gw):
    for st in (201, 404, 500):
        r = gw.request("GET", "/rs/x", headers=[("X-Test-Mode", "status=%d" % st)])
        assert r.status == st, r
        assert r.echo()["target"] == "/x"


def test_extra_bytes_after_response_never_reach_another_request(gw):
    """A backend that sends more than its Content-Length (here: a whole unsolicited
    response) must not desynchronise the pooled connection: the next request gets
    its own answer, never the smuggled one."""
    r = gw.request("GET", "/rs/x?first", headers=[("X-Test-Mode", "smuggle")])
    assert r.status == 200, r
    assert r.echo()["target"] == "/x?first"
    time.sleep(0.1)
    for i in range(3):
        r2 = gw.request("GET", "/rs/x?next=%d" % i)
        assert not r2.has("X-Smuggled") and r2.body != b"EVIL!", r2
        assert r2.status == 200, r2
        assert r2.echo()["target"] == "/x?next=%d" % i


def test_smuggled_bytes_with_immediate_next_request(gw):
    """Same, with the next request sent while the extra bytes may still be in flight."""
    for i in range(5):
        r = gw.request("GET", "/rs/x?s=%d" % i, headers=[("X-Test-Mode", "smuggle")])
        assert not r.has("X-Smuggled") and r.body != b"EVIL!", r
        assert r.status == 200, r
        assert r.echo()["target"] == "/x?s=%d" % i
