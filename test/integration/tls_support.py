"""TLS for the integration tests: certificates made with the `openssl` command at test
time, a TLS client connection, test/integration/backend.py behind TLS, and etcd with
https (and mutual TLS).

Fixtures (import them into a test module: `from tls_support import certs, tls_backend`):
  certs         a Certs object: a test PKI in a temporary directory (made once per module)
  tls_backend   factory: tls_backend(cert="server", name="tb1", close_notify=False)
                -> TlsBackendProc, stopped at teardown
  tls_etcd      factory: tls_etcd(certs, mtls=False) -> TlsEtcd, started (no auth)

Run as a program, this module is the TLS backend:
  tls_support.py backend --port P --control-port C --cert F --key F [--close-notify]
The TLS port answers like backend.py (same X-Test-Mode behaviours); the plain control
port serves /__stats, /__requests, /__reset for the same backend. With --close-notify,
a connection the backend closes gets a TLS close_notify first; without it, the backend
closes the TCP connection only (a "dirty" TLS shutdown).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402

try:
    import pytest
except ImportError:         # run as the backend program
    pytest = None


# ---------------------------------------------------------------------------------------
# Certificates

def _openssl(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode()))


class Certs:
    """A small PKI in `d`:

      root.pem/.key           the test root CA
      inter.pem/.key          an intermediate CA signed by the root
      server.pem/.key         localhost, 127.0.0.1, ::1; signed by the intermediate
      server-chain.pem        server.pem + inter.pem (what a server must send)
      server-leaf-only.pem    server.pem alone (a server that forgets the chain)
      server-combined.pem     key and chain in one file
      other-root.pem/.key     an unrelated CA
      other-server.pem/.key   localhost, 127.0.0.1 signed by the unrelated CA
      wronghost.pem/.key      wrong.example only, signed by the root
      expired.pem/.key        localhost, 127.0.0.1, expired yesterday, signed by the root
      client.pem/.key         a client certificate (CN=mgw-evd) signed by the root
      etcd.pem/.key           127.0.0.1, localhost; serverAuth + clientAuth, by the root
      a.pem/.key, b.pem/.key  a.test and b.test (SNI), signed by the root
      self.pem/.key           a self-signed localhost, 127.0.0.1
    """

    def __init__(self, d):
        self.d = d
        os.makedirs(d, exist_ok=True)
        self._ca("root", "mgw-evd test root CA")
        self._ca("inter", "mgw-evd test intermediate CA", signer="root")
        self._leaf("server", "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1", signer="inter")
        self._cat("server-chain.pem", "server.pem", "inter.pem")
        shutil.copy(self.p("server.pem"), self.p("server-leaf-only.pem"))
        self._cat("server-combined.pem", "server.key", "server-chain.pem")
        self._ca("other-root", "unrelated CA")
        self._leaf("other-server", "localhost", "DNS:localhost,IP:127.0.0.1", signer="other-root")
        self._leaf("wronghost", "wrong.example", "DNS:wrong.example", signer="root")
        self._leaf("expired", "localhost", "DNS:localhost,IP:127.0.0.1", signer="root", days=-1)
        self._leaf("client", "mgw-evd", None, signer="root", eku="clientAuth")
        self._leaf("etcd", "etcd", "DNS:localhost,IP:127.0.0.1", signer="root",
                   eku="serverAuth,clientAuth")
        self._leaf("a", "a.test", "DNS:a.test", signer="root")
        self._leaf("b", "b.test", "DNS:b.test", signer="root")
        _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", "self.key", "-out", "self.pem", "-days", "30",
                  "-subj", "/CN=localhost",
                  "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], d)

    def p(self, name):
        return os.path.join(self.d, name)

    def _cat(self, out, *parts):
        with open(self.p(out), "wb") as f:
            for part in parts:
                with open(self.p(part), "rb") as g:
                    f.write(g.read())

    def _ca(self, name, cn, signer=None):
        if signer is None:
            _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "30",
                      "-subj", "/CN=" + cn,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.d)
            return
        with open(self.p(name + ".ext"), "w") as f:
            f.write("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                    "keyUsage=critical,keyCertSign,cRLSign\n")
        _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn], self.d)
        _openssl(["x509", "-req", "-in", name + ".csr", "-CA", signer + ".pem",
                  "-CAkey", signer + ".key", "-CAcreateserial", "-out", name + ".pem",
                  "-days", "30", "-extfile", name + ".ext"], self.d)

    def _leaf(self, name, cn, san, signer, days=30, eku="serverAuth"):
        ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" \
              "extendedKeyUsage=%s\n" % eku
        if san:
            ext += "subjectAltName=%s\n" % san
        with open(self.p(name + ".ext"), "w") as f:
            f.write(ext)
        _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn], self.d)
        _openssl(["x509", "-req", "-in", name + ".csr", "-CA", signer + ".pem",
                  "-CAkey", signer + ".key", "-CAcreateserial", "-out", name + ".pem",
                  "-days", str(days), "-extfile", name + ".ext"], self.d)

    def client_context(self, ca="root.pem", cert=None, key=None, alpn=None):
        ctx = ssl.create_default_context(cafile=self.p(ca))
        if cert:
            ctx.load_cert_chain(self.p(cert), self.p(key))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


# ---------------------------------------------------------------------------------------
# A TLS client connection with harness.HttpConn's request/response parsing

class TlsConn(harness.HttpConn):
    """ragged_eof=False: a close without close_notify raises ssl.SSLEOFError."""

    def __init__(self, port, ctx, host="127.0.0.1", server_hostname="localhost", timeout=10,
                 ragged_eof=True):
        super().__init__(port, host=host, timeout=timeout)
        self.raw = self.sock
        if not ragged_eof:
            # Python's contexts treat an EOF without close_notify as a clean one
            ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        self.sock = ctx.wrap_socket(self.raw, server_hostname=server_hostname,
                                    suppress_ragged_eofs=ragged_eof)
        self.host = "%s:%d" % (server_hostname, port)


def tls_request(port, ctx, method, target, headers=None, body=None, timeout=10,
                server_hostname="localhost"):
    with TlsConn(port, ctx, server_hostname=server_hostname, timeout=timeout) as c:
        r = c.request(method, target, headers, body)
    if r is None:
        raise AssertionError("TLS connection closed without a response to %s %s"
                             % (method, target))
    return r


# ---------------------------------------------------------------------------------------
# The TLS backend (backend.py's Backend, its sockets wrapped in TLS)

class _CloseNotify:
    """An SSL socket whose shutdown() sends close_notify before closing."""

    def __init__(self, ss):
        self._ss = ss

    def __getattr__(self, name):
        return getattr(self._ss, name)

    def shutdown(self, how):
        try:
            self._ss.settimeout(2)
            self._ss.unwrap()       # sends close_notify (then waits for the peer's)
        except (OSError, ValueError):
            pass
        try:
            self._ss.shutdown(how)
        except (OSError, ValueError):
            pass


def run_tls_backend(argv):
    import backend as plain

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--name", default="tls-backend")
    ap.add_argument("--close-notify", action="store_true")
    a = ap.parse_args(argv)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])
    b = plain.Backend(a.control_port, a.name)
    b.handshakes_failed = 0
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", a.port))
    lsock.listen(256)

    def serve(s, cid):
        try:
            s.settimeout(10)
            ss = ctx.wrap_socket(s, server_side=True)
        except (OSError, ssl.SSLError) as e:
            sys.stderr.write("handshake failed: %s\n" % e)
            sys.stderr.flush()
            with b.lock:
                b.open -= 1
                b.socks.discard(s)
            s.close()
            return
        b._serve(_CloseNotify(ss) if a.close_notify else ss, cid)
        with b.lock:
            b.socks.discard(s)

    threading.Thread(target=b.accept_loop, args=(lsock, serve), daemon=True).start()
    sys.stderr.write("tls backend %s on %d (control %d)\n" % (a.name, a.port, a.control_port))
    sys.stderr.flush()
    b.serve_forever()


class TlsBackendProc(harness.Proc, harness.BackendControl):
    def __init__(self, workdir, certs, cert="server-chain.pem", key="server.key", name="tb1",
                 close_notify=False):
        self.port = harness.free_port()
        self.control_port = harness.free_port()
        argv = [harness.PYTHON, os.path.abspath(__file__), "backend", "--port", str(self.port),
                "--control-port", str(self.control_port), "--cert", certs.p(cert),
                "--key", certs.p(key), "--name", name]
        if close_notify:
            argv.append("--close-notify")
        super().__init__(argv, workdir, "tls-backend-" + name)
        harness.wait_port(self.control_port, self.proc, 10, "tls backend " + name, self.logs)
        harness.wait_port(self.port, self.proc, 10, "tls backend " + name, self.logs)

    def url(self, host="127.0.0.1"):
        return "https://%s:%d" % (host, self.port)



# ---------------------------------------------------------------------------------------
# etcd over https

class TlsEtcd:
    """A real etcd serving clients on https (peers stay plain, on loopback). With mtls,
    clients must present a certificate signed by the test root."""

    def __init__(self, workdir, certs, mtls=False, name="etcd-tls", cert="etcd"):
        import etcd_support
        self._es = etcd_support
        self.workdir = workdir
        self.certs = certs
        self.mtls = mtls
        self.cert = cert
        self.name = name
        self.port = harness.free_port()
        self.peer = harness.free_port()
        self.data = os.path.join(workdir, name + "-data")
        self.proc = None
        cert = ("client.pem", "client.key") if mtls else (None, None)
        self.ctx = certs.client_context(cert=cert[0], key=cert[1])
        self.ctx.check_hostname = False     # some tests serve a wrong name on purpose

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def argv(self):
        c = "https://127.0.0.1:%d" % self.port
        p = "http://127.0.0.1:%d" % self.peer
        a = [self._es.ETCD_BIN, "--name", "t1", "--data-dir", self.data,
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", "t1=" + p, "--initial-cluster-state", "new",
             "--cert-file", self.certs.p(self.cert + ".pem"),
             "--key-file", self.certs.p(self.cert + ".key"),
             "--logger", "zap", "--log-outputs", "stderr"]
        if self.mtls:
            a += ["--client-cert-auth", "--trusted-ca-file", self.certs.p("root.pem")]
        return a

    def start(self, timeout=20.0):
        self.proc = harness.Proc(self.argv(), self.workdir, self.name)
        deadline = time.monotonic() + timeout * harness.SLOW
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise AssertionError("etcd exited early\n" + self.proc.logs())
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1,
                                            context=self.ctx) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError("etcd not healthy within %.0fs\n%s" % (timeout, self.proc.logs()))

    def call(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ctx) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise self._es.EtcdError(e.code, e.read().decode("utf-8", "replace"))

    def put(self, key, value):
        self.call("/v3/kv/put", {"key": self._es.b64(key), "value": self._es.b64(value)})

    def stop(self):
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM, timeout=10)
            self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Fixtures

if pytest is not None:
    @pytest.fixture(scope="module")
    def certs(tmp_path_factory):
        return Certs(str(tmp_path_factory.mktemp("pki")))

    @pytest.fixture
    def tls_backend(workdir, certs):
        made = []

        def make(cert="server-chain.pem", key="server.key", name="tb1", close_notify=False):
            b = TlsBackendProc(workdir, certs, cert, key, name, close_notify)
            made.append(b)
            return b
        yield make
        for b in made:
            b.stop(signal.SIGKILL)

    @pytest.fixture
    def tls_etcd(workdir, certs):
        made = []

        def make(mtls=False, cert="etcd"):
            e = TlsEtcd(workdir, certs, mtls=mtls, name="etcd-tls%d" % len(made), cert=cert)
            made.append(e)
            return e.start()
        yield make
        for e in made:
            e.cleanup()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        run_tls_backend(sys.argv[2:])
    else:
        sys.exit("usage: tls_support.py backend --port P --control-port C --cert F --key F")
