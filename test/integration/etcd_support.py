"""etcd for the integration tests: a real etcd (Debian's etcd-server) on free loopback
ports with a throw-away data dir, a JSON-API client, a counting TCP proxy and fake
cluster members that hang or answer garbage.

Fixtures (import them into a test module: `from etcd_support import etcd, ...`):
  etcd          factory: etcd(auth=True, ttl=300, user="root", password="pw") -> Etcd,
                started and ready; auth enabled through the JSON API as the WSO2 guide
                does (user add root, role add root, grant, auth enable). Stopped at teardown.
  tcp_proxy     factory: tcp_proxy(target_port) -> CountingProxy (counts etcd calls)
  fake_member   factory: fake_member("hang" | "garbage" | "http-garbage") -> FakeMember
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import harness

ETCD_BIN = os.environ.get("ETCD_BIN", "/usr/bin/etcd")


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


class EtcdError(Exception):
    def __init__(self, status, body):
        super().__init__("etcd HTTP %s: %s" % (status, body[:300]))
        self.status = status
        self.body = body


class Etcd:
    """One etcd member. restart() keeps the ports and the data (tokens are invalidated)."""

    def __init__(self, workdir, ttl=300, name="etcd", extra_args=None):
        self.workdir = workdir
        self.name = name
        self.port = harness.free_port()
        self.peer = harness.free_port()
        self.data = os.path.join(workdir, name + "-data")
        self.ttl = ttl
        self.extra_args = list(extra_args or [])
        self.proc = None
        self.user = None
        self.password = None
        self._token = None
        self.starts = 0

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def argv(self):
        u = "http://127.0.0.1:%d"
        return [ETCD_BIN, "--name", "t1", "--data-dir", self.data,
                "--listen-client-urls", u % self.port, "--advertise-client-urls", u % self.port,
                "--listen-peer-urls", u % self.peer, "--initial-advertise-peer-urls", u % self.peer,
                "--initial-cluster", "t1=" + u % self.peer, "--initial-cluster-state", "new",
                "--auth-token", "simple", "--auth-token-ttl", str(self.ttl),
                "--bcrypt-cost", "4", "--logger", "zap", "--log-outputs", "stderr"] \
            + self.extra_args

    def start(self, timeout=15.0):
        self.starts += 1
        self.proc = harness.Proc(self.argv(), self.workdir, "%s-%d" % (self.name, self.starts))
        deadline = time.monotonic() + timeout * harness.SLOW
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise AssertionError("etcd exited early\n" + self.proc.logs())
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        self._token = None
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError("etcd not healthy within %.0fs\n%s" % (timeout, self.proc.logs()))

    def stop(self):
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM, timeout=10)
            self.proc = None
        self._token = None

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)

    # -- JSON API --------------------------------------------------------------------
    def call(self, path, body, token=None, timeout=5):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise EtcdError(e.code, e.read().decode("utf-8", "replace"))

    def token(self):
        if self.user is None:
            return None
        if self._token is None:
            r = self.call("/v3/auth/authenticate", {"name": self.user, "password": self.password})
            self._token = r["token"]
        return self._token

    def kv(self, path, body):
        try:
            return self.call(path, body, self.token())
        except EtcdError as e:
            if e.status != 401:
                raise
            self._token = None     # expired (short TTL in a test): once more
            return self.call(path, body, self.token())

    def enable_auth(self, user="root", password="pw"):
        """As the WSO2 guide: user add, role add, grant, auth enable."""
        self.call("/v3/auth/user/add", {"name": user, "password": password})
        self.call("/v3/auth/role/add", {"name": "root"})
        self.call("/v3/auth/user/grant", {"user": user, "role": "root"})
        self.call("/v3/auth/enable", {})
        self.user, self.password = user, password
        self._token = None

    def put(self, key, value):
        self.kv("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def delete(self, key):
        self.kv("/v3/kv/deleterange", {"key": b64(key)})

    def get(self, key):
        r = self.kv("/v3/kv/range", {"key": b64(key)})
        kvs = r.get("kvs")
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode()

    def put_many(self, items, per_txn=128):
        items = list(items)
        for i in range(0, len(items), per_txn):
            ops = [{"request_put": {"key": b64(k), "value": b64(v)}}
                   for k, v in items[i:i + per_txn]]
            self.kv("/v3/kv/txn", {"success": ops})


class CountingProxy:
    """A TCP proxy in front of etcd that counts the HTTP requests going through, by
    request line ("POST /v3/auth/authenticate", "POST /v3/kv/txn", ...)."""

    REQ = re.compile(rb"(GET|POST|PUT|DELETE) (/[^ \r\n]*) HTTP/1\.[01]\r\n")

    def __init__(self, target_port):
        self.target_port = target_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.counts = {}
        self.connections = 0
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def count(self, path_suffix):
        with self.lock:
            return sum(n for (m, p), n in self.counts.items() if p.endswith(path_suffix))

    def reset(self):
        with self.lock:
            self.counts.clear()

    def retarget(self, port):
        """Send new connections to another port and cut the current ones."""
        with self.lock:
            self.target_port = port
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.connections += 1
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src, dst, count):
        tail = b""
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if count:
                    buf = tail + d
                    for m in self.REQ.finditer(buf):
                        key = (m.group(1).decode(), m.group(2).decode())
                        with self.lock:
                            self.counts[key] = self.counts.get(key, 0) + 1
                    # keep an unfinished request line for the next chunk
                    cut = buf.rfind(b"\r\n")
                    tail = buf[cut + 2:][-200:] if cut >= 0 else buf[-200:]
                dst.sendall(d)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass


class FakeMember:
    """A cluster member that is not etcd: "hang" accepts and never answers, "garbage"
    answers bytes that are not HTTP, "http-garbage" answers 200 with a non-JSON body."""

    def __init__(self, mode):
        self.mode = mode
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.closed = False
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "hang":
                self.held.append(c)
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            c.recv(65536)
            if self.mode == "garbage":
                c.sendall(b"\x00\x01garbage, not HTTP at all\r\n\r\n")
            else:
                body = b"<html>not etcd</html>"
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in self.held:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def etcd(workdir):
    made = []

    def make(auth=True, ttl=300, user="root", password="pw", start=True, extra_args=None):
        e = Etcd(workdir, ttl=ttl, name="etcd%d" % len(made), extra_args=extra_args)
        made.append(e)
        if start:
            e.start()
            if auth:
                e.enable_auth(user, password)
        return e
    yield make
    for e in made:
        e.cleanup()


@pytest.fixture
def tcp_proxy():
    made = []

    def make(target_port):
        p = CountingProxy(target_port)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


@pytest.fixture
def fake_member():
    made = []

    def make(mode):
        f = FakeMember(mode)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()
