"""TLS on every hop (issue 4): the HTTPS listener, HTTPS backends, HTTPS etcd (and
mutual TLS), and the start-up checks of certificate, key and CA files.

Certificates are made by tls_support.Certs with the openssl command, once per module.
"""

import os
import re
import socket
import ssl
import subprocess
import time

import pytest

import harness
from harness import HttpConn, fault, openapi, wait_for
from tls_support import TlsConn, certs, tls_backend, tls_etcd, tls_request  # noqa: F401

PERIOD_MS = 300


def api(urls, base="/t"):
    return openapi(base, {"/x": {m: None for m in ("get", "post", "head")},
                          "/__mode/{m}/x": {"get": None}}, endpoints=urls)


def copy_pki(certs, workdir):
    """The PKI next to the gateway file, so that relative paths are tested."""
    d = os.path.join(workdir, "pki")
    if not os.path.isdir(d):
        os.symlink(certs.d, d)
    return "pki/"


def tls_gateway(gateway, certs, workdir, apis, tls=None, extra=None, limits=None, **kw):
    """A gateway with a plain listener (g.port) and an HTTPS one (g.tls_port)."""
    pre = copy_pki(certs, workdir)
    port, tport = harness.free_port(), harness.free_port()
    if tls is None:
        tls = {"certificate": pre + "server-chain.pem", "key": pre + "server.key"}
    conf = {"listeners": [{"address": "127.0.0.1", "port": port},
                          {"address": "127.0.0.1", "port": tport, "tls": tls}]}
    conf.update(extra or {})
    g = gateway(apis, port=port, extra=conf, limits=limits, **kw)
    g.tls_port = tport
    harness.wait_port(tport, g.proc, 10, "mgw-evd https", g.logs)
    return g




def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


# ---------------------------------------------------------------------------------------
# HTTPS listener

def test_https_listener_happy_path(gateway, backend, certs, workdir):
    b = backend("plain")
    g = tls_gateway(gateway, certs, workdir, [api([b.url])])
    ctx = certs.client_context(alpn=["h2", "http/1.1"])
    with TlsConn(g.tls_port, ctx) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        for i in range(3):          # keep-alive over TLS
            r = c.request("POST", "/t/x?i=%d" % i, body=b"hello %d" % i)
            assert r.status == 200, r
            e = r.echo()
            assert e["body"] == "hello %d" % i
            assert e["hmap"]["x-forwarded-proto"] == ["https"]
            assert e["hmap"]["x-forwarded-host"] == ["localhost:%d" % g.tls_port]
    # the plain listener keeps saying http
    r = g.request("GET", "/t/x")
    assert r.status == 200 and r.echo()["hmap"]["x-forwarded-proto"] == ["http"], r
    # errors answered by the gateway itself go over TLS too
    r = tls_request(g.tls_port, ctx, "GET", "/nothing-here")
    assert r.status == 404 and fault(r)[0] == 900906, r


def test_https_listener_serves_the_whole_chain(gateway, backend, certs, workdir):
    """The client trusts only the root: it verifies only if the intermediate is sent."""
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])])
    ctx = ssl.create_default_context(cafile=certs.p("root.pem"))
    r = tls_request(g.tls_port, ctx, "GET", "/t/x")
    assert r.status == 200, r
    r = tls_request(g.tls_port, ctx, "GET", "/t/x", server_hostname="127.0.0.1")
    assert r.status == 200, r


def test_https_listener_with_curl(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])])
    p = subprocess.run(["curl", "-sS", "--cacert", certs.p("root.pem"), "-o", "-",
                        "-w", "\\n%{http_code} %{http_version}",
                        "https://localhost:%d/t/x" % g.tls_port],
                       capture_output=True, timeout=20)
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert out.endswith("200 1.1"), out


def test_combined_pem_key_defaults_to_certificate_file(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])],
                    tls={"certificate": "pki/server-combined.pem"})
    r = tls_request(g.tls_port, certs.client_context(), "GET", "/t/x")
    assert r.status == 200, r


def test_sni_picks_the_matching_certificate(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])], tls={"certificates": [
        {"certificate": "pki/server-chain.pem", "key": "pki/server.key"},
        {"certificate": "pki/a.pem", "key": "pki/a.key"},
        {"certificate": "pki/b.pem", "key": "pki/b.key"}]})
    ctx = certs.client_context()
    for name in ("a.test", "b.test", "localhost"):
        with TlsConn(g.tls_port, ctx, server_hostname=name) as c:   # verifies the name
            r = c.request("GET", "/t/x")
            assert r.status == 200, r
    # an unknown name gets the default (first) certificate
    ctx2 = certs.client_context()
    ctx2.check_hostname = False
    with TlsConn(g.tls_port, ctx2, server_hostname="unknown.test") as c:
        cn = dict(x[0] for x in c.sock.getpeercert()["subject"])["commonName"]
        assert cn == "localhost"


def test_old_tls_versions_refused(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])],
                    tls={"certificate": "pki/server-chain.pem", "key": "pki/server.key",
                         "min_version": "1.3"})
    ctx = certs.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_request(g.tls_port, ctx, "GET", "/t/x")
    ctx = certs.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    assert tls_request(g.tls_port, ctx, "GET", "/t/x").status == 200
    # default listener: TLS 1.2 works, TLS 1.1 does not
    g2 = tls_gateway(gateway, certs, workdir, [api([b.url])])
    ctx = certs.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert tls_request(g2.tls_port, ctx, "GET", "/t/x").status == 200
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % g2.tls_port,
                        "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], input=b"",
                       capture_output=True, timeout=20)
    assert p.returncode != 0


def test_alpn_without_http1_refused(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])])
    with pytest.raises(ssl.SSLError):
        tls_request(g.tls_port, certs.client_context(alpn=["h2"]), "GET", "/t/x")
    # no ALPN at all is fine
    assert tls_request(g.tls_port, certs.client_context(), "GET", "/t/x").status == 200


def test_plain_http_on_tls_port_costs_one_connection(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])])
    ctx = certs.client_context()
    keep = TlsConn(g.tls_port, ctx)
    assert keep.request("GET", "/t/x").status == 200
    with HttpConn(g.tls_port, timeout=5) as c:
        c.send_raw(b"GET /t/x HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                d = c.sock.recv(4096)
                if not d:
                    break
                data += d
        except (ConnectionResetError, socket.timeout):
            pass
        assert b"HTTP/1.1 200" not in data
    # the other connection and new ones are fine
    assert keep.request("GET", "/t/x").status == 200
    keep.close()
    assert tls_request(g.tls_port, ctx, "GET", "/t/x").status == 200
    assert g.request("GET", "/t/x").status == 200


def test_garbage_and_stalled_handshakes(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])],
                    limits={"tls_handshake_timeout_ms": 500})
    ctx = certs.client_context()
    # garbage instead of a ClientHello
    with HttpConn(g.tls_port, timeout=5) as c:
        c.send_raw(os.urandom(64) + b"\x16\x03\x01\xff\xff" + b"\x00" * 100)
        try:
            assert c.sock.recv(4096) is not None
        except (ConnectionResetError, socket.timeout):
            pass
    # stalled: nothing at all, and half a ClientHello
    silent = HttpConn(g.tls_port, timeout=10)
    half = HttpConn(g.tls_port, timeout=10)
    half.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    t0 = time.monotonic()
    # meanwhile other clients are served, over TLS and plain
    for _ in range(5):
        assert tls_request(g.tls_port, ctx, "GET", "/t/x").status == 200
        assert g.request("GET", "/t/x").status == 200
    for s in (silent, half):
        try:
            d = s.sock.recv(4096)
        except ConnectionResetError:
            d = b""
        assert d == b"", d
        s.close()
    took = time.monotonic() - t0
    assert took < 5 * harness.SLOW, took        # closed by the handshake timeout
    assert g.alive()


def test_front_guard_answers_over_tls(gateway, backend, certs, workdir):
    """The per-connection guard watches the decrypted bytes: 414, 431, 413 and 408 come
    back over TLS like over plain HTTP."""
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])],
                    limits={"header_timeout_ms": 500, "max_uri_bytes": 256,
                            "max_header_bytes": 1024, "max_body_bytes": 100})
    ctx = certs.client_context()
    r = tls_request(g.tls_port, ctx, "GET", "/t/x?" + "a" * 400)
    assert r.status == 414, r
    r = tls_request(g.tls_port, ctx, "GET", "/t/x", headers=[("X-Big", "b" * 2000)])
    assert r.status == 431, r
    r = tls_request(g.tls_port, ctx, "POST", "/t/x", body=b"c" * 500)
    assert r.status == 413, r
    with TlsConn(g.tls_port, ctx) as c:
        c.send_raw(b"GET /t/x HTTP/1.1\r\nHost: x\r\n")      # and nothing more
        r = c.read_response()
        assert r is not None and r.status == 408, r
    assert b.stats()["requests"] == 0
    assert tls_request(g.tls_port, ctx, "GET", "/t/x").status == 200


# ---------------------------------------------------------------------------------------
# HTTPS backends

def test_https_backend_happy_path_and_pool_reuse(gateway, tls_backend, certs, workdir):
    b = tls_backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url()])],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    for i in range(20):
        r = g.request("POST", "/t/x?i=%d" % i, body=b"n=%d" % i)   # new client connection
        assert r.status == 200, r
        e = r.echo()
        assert e["target"] == "/x?i=%d" % i and e["body"] == "n=%d" % i
        assert e["hmap"]["host"] == ["127.0.0.1:%d" % b.port]
    st = b.stats()
    assert st["requests"] == 20
    assert st["connections"] <= 2, st       # pooled TLS connections are reused
    # a big response, streamed
    r = g.request("GET", "/t/x", headers=[("X-Test-Mode", "big=3000000")])
    assert r.status == 200 and len(r.body) == 3000000, r
    assert r.body[:5] == bytes(range(5))
    # chunked from the backend
    r = g.request("GET", "/t/x", headers=[("X-Test-Mode", "chunked")])
    assert r.status == 200 and r.echo()["target"] == "/x", r


def test_https_backend_by_name_sends_sni(gateway, tls_backend, certs, workdir):
    b = tls_backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url("localhost")])],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    r = g.request("GET", "/t/x")
    assert r.status == 200, r
    assert r.echo()["hmap"]["host"] == ["localhost:%d" % b.port]


def test_https_backend_wrong_ca_is_502_and_logged(gateway, tls_backend, certs, workdir):
    """Default trust store: the test CA is not in it. Then a CA file of another CA."""
    b = tls_backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url()])])
    for _ in range(3):
        r = g.request("GET", "/t/x")
        assert r.status == 502, r
        assert fault(r)[0] == 101503
    assert b.stats()["requests"] == 0
    err = g.stderr()
    lines = [ln for ln in err.splitlines() if "TLS handshake failed" in ln and "[upstream]" in ln]
    assert lines and "certificate verify failed" in lines[0], err
    assert "https://127.0.0.1:%d" % b.port in lines[0]
    assert re.search(r"unable to get local issuer certificate|self-signed certificate", lines[0])
    # logged once while the fault persists, not per request
    assert len([ln for ln in lines if " warn " in ln]) == 1, lines

    b2 = tls_backend(cert="other-server.pem", key="other-server.key", name="other")
    g2 = tls_gateway(gateway, certs, workdir, [api([b2.url()])],
                     extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    r = g2.request("GET", "/t/x")
    assert r.status == 502, r
    assert "certificate verify failed" in g2.stderr()


def test_https_backend_wrong_host_is_502(gateway, tls_backend, certs, workdir):
    b = tls_backend(cert="wronghost.pem", key="wronghost.key")
    g = tls_gateway(gateway, certs, workdir, [api([b.url()])],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    r = g.request("GET", "/t/x")
    assert r.status == 502, r
    assert re.search(r"certificate verify failed: (IP address|hostname) mismatch", g.stderr()), \
        g.stderr()
    # by name too
    g2 = tls_gateway(gateway, certs, workdir, [api([b.url("localhost")])],
                     extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    r = g2.request("GET", "/t/x")
    assert r.status == 502, r
    assert "hostname mismatch" in g2.stderr(), g2.stderr()


def test_https_backend_expired_certificate_is_502(gateway, tls_backend, certs, workdir):
    b = tls_backend(cert="expired.pem", key="expired.key")
    g = tls_gateway(gateway, certs, workdir, [api([b.url()])],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    assert g.request("GET", "/t/x").status == 502
    assert "certificate has expired" in g.stderr(), g.stderr()


def test_skip_verify_switch_global_and_per_origin(gateway, tls_backend, certs, workdir):
    self_signed = tls_backend(cert="self.pem", key="self.key", name="self")
    other = tls_backend(cert="other-server.pem", key="other-server.key", name="other")
    # global switch: everything goes, loudly
    g = tls_gateway(gateway, certs, workdir, [api([self_signed.url()], "/a"),
                                              api([other.url()], "/b")],
                    extra={"backend_tls": {"verify": False}})
    assert g.request("GET", "/a/x").status == 200
    assert g.request("GET", "/b/x").status == 200
    err = g.stderr()
    assert re.search(r"warn .*backend_tls verify: false .*NOT verified", err), err
    assert "https://127.0.0.1:%d: TLS certificate and host name NOT verified" % self_signed.port \
        in err, err
    # per origin: only the listed one is exempt
    g2 = tls_gateway(gateway, certs, workdir, [api([self_signed.url()], "/a"),
                                               api([other.url()], "/b")],
                     extra={"backend_tls": {"no_verify_origins": [self_signed.url() + "/"]}})
    assert g2.request("GET", "/a/x").status == 200
    assert g2.request("GET", "/b/x").status == 502
    err = g2.stderr()
    assert "no_verify_origins: https://127.0.0.1:%d is NOT verified" % self_signed.port in err
    assert "https://127.0.0.1:%d: TLS handshake failed" % other.port in err


def test_failover_past_a_tls_failure(gateway, tls_backend, backend, certs, workdir):
    bad = tls_backend(cert="wronghost.pem", key="wronghost.key", name="bad")
    good = backend("good")
    g = tls_gateway(gateway, certs, workdir,
                    [api({"type": "failover", "urls": [bad.url(), good.url]})],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    r = g.request("GET", "/t/x")
    assert r.status == 200 and r.json()["backend"] == "good", r


def test_backend_tls_stalled_handshake_times_out(gateway, certs, workdir):
    """A backend that accepts TCP but never answers the ClientHello: 504, not a hang."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    port = ls.getsockname()[1]
    try:
        g = tls_gateway(gateway, certs, workdir, [api(["https://127.0.0.1:%d" % port])],
                        limits={"connect_timeout_ms": 400})
        t0 = time.monotonic()
        r = g.request("GET", "/t/x")
        assert r.status == 504, r
        assert time.monotonic() - t0 < 3 * harness.SLOW
        assert "handshake not completed within connect_timeout_ms" in g.stderr()
    finally:
        ls.close()


def test_dirty_shutdown_rule(gateway, tls_backend, certs, workdir):
    """RFC 9112 9.8: framed bodies are complete whatever the close; a body delimited by
    the close is complete only with close_notify."""
    dirty = tls_backend(name="dirty")
    clean = tls_backend(name="clean", close_notify=True)
    g = tls_gateway(gateway, certs, workdir, [api([dirty.url()], "/d"), api([clean.url()], "/c")],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    fds0 = nfds(g.pid)
    # Content-Length, then the backend closes without close_notify: delivered
    for _ in range(3):
        r = g.request("POST", "/d/x", body=b"a", headers=[("X-Test-Mode", "conn-close")])
        assert r.status == 200 and r.complete and r.echo()["body"] == "a", r
    # chunked, the same
    r = g.request("GET", "/d/x", headers=[("X-Test-Mode", "chunked;conn-close")])
    assert r.status == 200 and r.complete, r
    # body delimited by the close, with close_notify: complete
    r = g.request("GET", "/c/x", headers=[("X-Test-Mode", "no-length;big=100000")])
    assert r.status == 200 and r.complete and len(r.body) == 100000, r
    assert r.body == bytes(i % 251 for i in range(100000))
    # ... without close_notify: the client sees a truncated response (no last chunk)
    for _ in range(3):
        r = g.request("GET", "/d/x", headers=[("X-Test-Mode", "no-length;big=100000")])
        assert r.status == 200 and r.framing == "chunked" and not r.complete, r
    err = g.stderr()
    assert re.search(r"closed its TLS connection without close_notify .*treated as truncated",
                     err), err
    # HTTP/1.0 client: close-delimited to it as well, but the gateway then must not
    # end the response cleanly (no close_notify to the client)
    with TlsConn(g.tls_port, certs.client_context(), ragged_eof=False) as c:
        c.send_raw(b"GET /d/x HTTP/1.0\r\nX-Test-Mode: no-length;big=100000\r\n\r\n")
        data = b""
        err10 = None
        try:
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                data += d
        except (ssl.SSLError, ConnectionResetError) as e:
            err10 = e
        assert err10 is not None or b"\r\n\r\n" not in data, data[:200]
    with TlsConn(g.tls_port, certs.client_context(), ragged_eof=False) as c:
        c.send_raw(b"GET /c/x HTTP/1.0\r\nX-Test-Mode: no-length;big=100000\r\n\r\n")
        data = b""
        while True:
            d = c.sock.recv(65536)      # a clean close_notify: no exception
            if not d:
                break
            data += d
        assert data.split(b"\r\n\r\n", 1)[1] == bytes(i % 251 for i in range(100000))
    # no hang, no leaked sockets
    time.sleep(0.3)
    assert g.request("GET", "/d/x").status == 200
    assert nfds(g.pid) <= fds0 + 2, (fds0, nfds(g.pid))


def test_https_backend_through_https_listener(gateway, tls_backend, certs, workdir):
    b = tls_backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url()])],
                    extra={"backend_tls": {"ca_file": "pki/root.pem"}})
    with TlsConn(g.tls_port, certs.client_context()) as c:
        for i in range(10):
            r = c.request("GET", "/t/x?k=%d" % i)
            assert r.status == 200, r
            assert r.echo()["hmap"]["x-forwarded-proto"] == ["https"]
    assert b.stats()["connections"] == 1


# ---------------------------------------------------------------------------------------
# HTTPS etcd

def etcd_api(url_default, key="tlskey", base="/t"):
    return openapi(base, {"/x": {"get": None}}, endpoints=["etcd (%s, %s)" % (key, url_default)])


def test_etcd_over_https(gateway, backend, tls_etcd, certs, workdir):
    e = tls_etcd()
    b1, b2 = backend("one"), backend("two")
    e.put("tlskey", b2.url)
    g = gateway([etcd_api(b1.url)], args=["--etcdurl=%s" % e.url, "--etcdtimer=%d" % PERIOD_MS,
                                          "--etcdcafile=%s" % certs.p("root.pem")])
    assert wait_for(lambda: g.request("GET", "/t/x").json()["backend"] == "two", 10), g.logs()
    e.put("tlskey", b1.url)
    assert wait_for(lambda: g.request("GET", "/t/x").json()["backend"] == "one", 10), g.logs()
    assert "unreachable" not in g.stderr()


def test_etcd_https_not_trusted_is_logged_and_defaults_apply(gateway, backend, tls_etcd,
                                                             certs, workdir):
    e = tls_etcd()
    b1, b2 = backend("one"), backend("two")
    e.put("tlskey", b2.url)
    g = gateway([etcd_api(b1.url)], args=["--etcdurl=%s" % e.url, "--etcdtimer=%d" % PERIOD_MS])
    assert wait_for(lambda: "certificate verify failed" in g.stderr(), 10), g.logs()
    assert g.request("GET", "/t/x").json()["backend"] == "one"
    line = [ln for ln in g.stderr().splitlines() if "certificate verify failed" in ln][0]
    assert e.url in line and "TLS" in line, line


def test_etcd_wrong_host_refused(gateway, backend, tls_etcd, certs, workdir):
    """etcd serving a certificate (from the trusted CA) for another name."""
    e = tls_etcd(cert="wronghost")
    b1, b2 = backend("one"), backend("two")
    e.put("tlskey", b2.url)
    g = gateway([etcd_api(b1.url)], args=["--etcdurl=%s" % e.url, "--etcdtimer=%d" % PERIOD_MS,
                                          "--etcdcafile=%s" % certs.p("root.pem")])
    assert wait_for(lambda: "IP address mismatch" in g.stderr(), 10), g.logs()
    assert g.request("GET", "/t/x").json()["backend"] == "one"


def test_etcd_mutual_tls(gateway, backend, tls_etcd, certs, workdir):
    e = tls_etcd(mtls=True)
    b1, b2 = backend("one"), backend("two")
    e.put("tlskey", b2.url)
    pre = copy_pki(certs, workdir)
    # the etcd TLS settings from the gateway file, relative to it
    g = gateway([etcd_api(b1.url)], extra={"etcd": {
        "urls": [e.url], "timer_ms": PERIOD_MS, "ca_file": pre + "root.pem",
        "cert_file": pre + "client.pem", "key_file": pre + "client.key"}})
    assert wait_for(lambda: g.request("GET", "/t/x").json()["backend"] == "two", 10), g.logs()
    # without a client certificate etcd refuses us
    g2 = gateway([etcd_api(b1.url)], args=["--etcdurl=%s" % e.url, "--etcdtimer=%d" % PERIOD_MS,
                                           "--etcdcafile=%s" % certs.p("root.pem")])
    assert wait_for(lambda: re.search(r"etcd \S+ unreachable: (TLS|connection)", g2.stderr()),
                    10), g2.logs()
    assert g2.request("GET", "/t/x").json()["backend"] == "one"
    # flags work as well
    g3 = gateway([etcd_api(b1.url)], args=["--etcdurl=%s" % e.url, "--etcdtimer=%d" % PERIOD_MS,
                                           "--etcdcafile=%s" % certs.p("root.pem"),
                                           "--etcdcert=%s" % certs.p("client.pem"),
                                           "--etcdkey=%s" % certs.p("client.key")])
    assert wait_for(lambda: g3.request("GET", "/t/x").json()["backend"] == "two", 10), g3.logs()


def test_end_to_end_tls_on_every_hop(gateway, tls_backend, backend, tls_etcd, certs, workdir):
    """A TLS client -> the HTTPS listener -> an HTTPS backend whose URL comes from etcd
    over mutual TLS."""
    e = tls_etcd(mtls=True)
    fallback = backend("fallback")
    b = tls_backend(name="secure")
    e.put("tlskey", b.url("localhost") + "/base")
    g = tls_gateway(gateway, certs, workdir, [etcd_api(fallback.url)], extra={
        "backend_tls": {"ca_file": "pki/root.pem"},
        "etcd": {"urls": [e.url], "timer_ms": PERIOD_MS, "ca_file": "pki/root.pem",
                 "cert_file": "pki/client.pem", "key_file": "pki/client.key"}})
    ctx = certs.client_context()

    def via_tls():
        r = tls_request(g.tls_port, ctx, "GET", "/t/x?q=1")
        return r.status == 200 and r.json()["backend"] == "secure" and r

    r = wait_for(via_tls, 10)
    assert r, g.logs()
    e_ = r.echo()
    assert e_["target"] == "/base/x?q=1"
    assert e_["hmap"]["x-forwarded-proto"] == ["https"]
    assert e_["hmap"]["host"] == ["localhost:%d" % b.port]


# ---------------------------------------------------------------------------------------
# Start-up checks

def run_gw(workdir, conf_text, args=(), timeout=20):
    path = os.path.join(workdir, "gw.yaml")
    with open(path, "w") as f:
        f.write(conf_text)
    with open(os.path.join(workdir, "api.yaml"), "w") as f:
        f.write(harness.to_yaml(api(["http://127.0.0.1:9"])))
    p = subprocess.run([harness.MGW_BIN, "-c", path] + list(args), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=timeout * harness.SLOW)
    err = p.stderr.decode("utf-8", "replace")
    for m in harness.SANITIZER_MARKERS:
        assert m not in err, err
    return p.returncode, p.stdout.decode(), err


def listener_conf(port, tls_lines):
    return ("listeners:\n  - address: 127.0.0.1\n    port: %d\n    tls:\n%s"
            "apis: [api.yaml]\n" % (port, "".join("      %s\n" % ln for ln in tls_lines)))


def test_startup_missing_certificate(certs, workdir):
    copy_pki(certs, workdir)
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/nope.pem", "key: pki/server.key"]))
    assert rc == 1, err
    assert re.search(r"gw\.yaml:5:20: \S*pki/nope\.pem: no such file", err), err
    assert "nothing served" in err


def test_startup_key_does_not_match(certs, workdir):
    copy_pki(certs, workdir)
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/server-chain.pem", "key: pki/a.key"]))
    assert rc == 1, err
    assert re.search(r"gw\.yaml:6:12: \S*pki/a\.key: the private key does not match the "
                     r"certificate in \S*pki/server-chain\.pem", err), err


def test_startup_not_pem_and_wrong_contents(certs, workdir):
    copy_pki(certs, workdir)
    with open(os.path.join(workdir, "junk.pem"), "w") as f:
        f.write("this is not a certificate\n")
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: junk.pem", "key: pki/server-chain.pem"]))
    assert rc == 1
    assert "junk.pem: not a PEM file" in err, err
    # a key where the certificate should be, and a certificate where the key should be
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/server.key", "key: pki/server.pem"]))
    assert rc == 1
    assert "server.key: no certificate in the PEM file" in err, err
    # every problem is reported, with the backend and etcd files too
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/server.pem", "key: pki/server.pem"]) +
        "backend_tls:\n  ca_file: nothing.pem\n",
        ["--etcdurl=https://127.0.0.1:1", "--etcdcafile=/nonexistent/ca.pem"])
    assert rc == 1
    assert "server.pem: no private key in the PEM file" in err, err
    assert re.search(r"gw\.yaml:\d+:\d+: \S*nothing\.pem: no such file", err), err
    assert "--etcdcafile: /nonexistent/ca.pem: no such file" in err, err
    assert "3 errors, nothing served" in err, err


def test_startup_unreadable_key(certs, workdir):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    copy_pki(certs, workdir)
    k = os.path.join(workdir, "locked.key")
    with open(certs.p("server.key")) as f, open(k, "w") as g:
        g.write(f.read())
    os.chmod(k, 0)
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/server-chain.pem", "key: locked.key"]))
    assert rc == 1
    assert "locked.key: cannot read: Permission denied" in err, err


def test_startup_expired_certificate_is_a_warning(gateway, backend, certs, workdir):
    b = backend()
    g = tls_gateway(gateway, certs, workdir, [api([b.url])],
                    tls={"certificate": "pki/expired.pem", "key": "pki/expired.key"})
    err = g.stderr()
    assert re.search(r"warn .*pki/expired\.pem: certificate 'localhost' expired on \d{4}-", err), err
    ctx = certs.client_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert tls_request(g.tls_port, ctx, "GET", "/t/x").status == 200
    # -t says so too, and still passes
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/expired.pem", "key: pki/expired.key"]), ["-t"])
    assert rc == 0, err
    assert "warning:" in err and "expired on" in err, err
    assert re.search(r"listen 127\.0\.0\.1:\d+ https \(CN=localhost, expires", out), out


def test_config_errors_in_tls_sections(certs, workdir):
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificat: x.pem", "min_version: \"1.1\""]) +
        "backend_tls:\n  verify: maybe\n  no_verify_origins: [\"http://x:1\"]\n"
        "  key_file: k.pem\n")
    assert rc == 1
    assert "unknown key 'certificat' in a listener's tls (did you mean 'certificate'?)" in err, err
    assert "min_version must be \"1.2\" or \"1.3\"" in err
    assert "verify must be true or false" in err
    assert "'http://x:1' is not an https origin" in err
    assert "key_file needs cert_file" in err
    assert "a certificate is needed" in err


def test_bad_cipher_list(certs, workdir):
    copy_pki(certs, workdir)
    rc, out, err = run_gw(workdir, listener_conf(harness.free_port(), [
        "certificate: pki/server-chain.pem", "key: pki/server.key", "ciphers: NOPE-NOTHING"]))
    assert rc == 1
    assert "no usable cipher in 'NOPE-NOTHING'" in err, err


def test_etcdkey_needs_etcdcert(workdir):
    p = subprocess.run([harness.MGW_BIN, "-c", "x.yaml", "--etcdkey=k.pem"],
                       capture_output=True, timeout=10)
    assert p.returncode == 2
    assert b"--etcdkey needs --etcdcert" in p.stderr
