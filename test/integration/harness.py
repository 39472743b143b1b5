"""Integration test harness for mgw-evd: free ports, processes, a raw HTTP client.

Importable by every test module (test/integration is on sys.path through pytest's
rootdir/conftest handling):

    from harness import free_port, Gateway, BackendProc, HttpConn, request, to_yaml

Environment:
    MGW_BIN      the gateway binary   (default: build/mgw-evd)
    BACKEND_BIN  the petstore sample backend (default: build/petstore-backend)
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _bin(env, default):
    p = os.environ.get(env, default)
    if not os.path.isabs(p):
        p = os.path.join(ROOT, p)
    return p


MGW_BIN = _bin("MGW_BIN", "build/mgw-evd")
BACKEND_BIN = _bin("BACKEND_BIN", "build/petstore-backend")

# Slower under sanitizers.
SLOW = 3.0 if os.environ.get("ASAN_OPTIONS") else 1.0
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: UndefinedBehaviorSanitizer")

_used_ports = set()


def wait_for(pred, timeout, step=0.05):
    """Poll pred() until it returns something true or timeout (scaled by SLOW) passes."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def free_port():
    """A loopback TCP port nobody listens on now (and not handed out before here)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port, proc=None, timeout=10.0, what="process", logs=None):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited with %s before listening on %d\n%s"
                                 % (what, proc.returncode, port, logs() if logs else ""))
        time.sleep(0.05)
    raise AssertionError("%s did not listen on %d within %.0fs\n%s"
                         % (what, port, timeout * SLOW, logs() if logs else ""))


# ---------------------------------------------------------------------------------------
# A tiny YAML emitter (block style, every string double-quoted) for generated configs.

def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


_PLAIN_KEY = re.compile(r"^[A-Za-z_/][A-Za-z0-9_/{}.-]*$")


def to_yaml(obj, indent=0):
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            key = str(k) if _PLAIN_KEY.match(str(k)) else _scalar(str(k))
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:\n%s" % (pad, key, to_yaml(v, indent + 1)))
            elif isinstance(v, dict):
                out.append("%s%s: {}\n" % (pad, key))
            elif isinstance(v, list):
                out.append("%s%s: []\n" % (pad, key))
            else:
                out.append("%s%s: %s\n" % (pad, key, _scalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                sub = to_yaml(v, indent + 1)
                # put the first line after "- "
                first, _, rest = sub.partition("\n")
                out.append("%s- %s\n%s" % (pad, first.strip(), rest))
            else:
                out.append("%s- %s\n" % (pad, _scalar(v) if not isinstance(v, (dict, list))
                                         else ("{}" if isinstance(v, dict) else "[]")))
    else:
        out.append(pad + _scalar(obj) + "\n")
    return "".join(out)


def openapi(base_path, paths, endpoints=None, title="testapi", extra=None):
    """An OpenAPI 3 document. paths: {"/p": {"get": {...}, ...}}; an operation value of
    None becomes a minimal operation. endpoints: API-level x-wso2-production-endpoints
    (a list of urls, a dict, or a "#/x-wso2-endpoints/..." string)."""
    doc = {"openapi": "3.0.0",
           "info": {"title": title, "version": "1.0.0"},
           "x-wso2-basePath": base_path}
    if endpoints is not None:
        doc["x-wso2-production-endpoints"] = ({"urls": endpoints}
                                              if isinstance(endpoints, list) else endpoints)
    p = {}
    for path, item in paths.items():
        pi = {}
        for k, v in item.items():
            if k.lower() in ("get", "head", "post", "put", "delete", "patch", "options",
                             "trace"):
                op = dict(v or {})
                op.setdefault("responses", {"200": {"description": "ok"}})
                pi[k] = op
            else:
                pi[k] = v
        p[path] = pi
    doc["paths"] = p
    if extra:
        doc.update(extra)
    return doc


# ---------------------------------------------------------------------------------------
# Processes

try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test runner dies (PR_SET_PDEATHSIG),
    so a killed pytest leaves no gateway or backend behind."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


class Proc:
    """A child process with its stdout/stderr in files."""

    def __init__(self, argv, workdir, name, env=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        e = dict(os.environ)
        if env:
            e.update(env)
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, cwd=workdir, env=e,
                                     preexec_fn=_die_with_parent)
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid

    def stdout(self):
        if not self._out.closed:
            self._out.flush()
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        if not self._err.closed:
            self._err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def logs(self):
        return "--- %s stderr ---\n%s\n--- %s stdout ---\n%s" % (
            self.name, self.stderr()[-6000:], self.name, self.stdout()[-3000:])

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal, wait (bounded), SIGKILL if needed. Returns the exit code, or None
        when the process had to be killed."""
        if self.returncode is not None:
            return self.returncode
        killed = False
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                killed = True
        self.returncode = None if killed else self.proc.returncode
        self._out.close()
        self._err.close()
        return self.returncode

    def wait(self, timeout):
        self.returncode = self.proc.wait(timeout * SLOW)
        return self.returncode


class BackendControl:
    """The control paths of backend.py (plain or behind TLS), on control_port."""

    def control(self, path):
        r = request(self.control_port, "GET", path, timeout=5)
        assert r.status == 200, r
        return json.loads(r.body)

    def stats(self):
        return self.control("/__stats")

    def requests(self):
        return self.control("/__requests")


class BackendProc(Proc, BackendControl):
    """test/integration/backend.py in its own process."""

    def __init__(self, workdir, name="b1", port=None):
        self.port = self.control_port = port or free_port()
        super().__init__([PYTHON, os.path.join(HERE, "backend.py"), "--port", str(self.port),
                          "--name", name], workdir, "backend-" + name)
        wait_port(self.port, self.proc, 10, "backend " + name, self.logs)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def reset(self):
        return self.control("/__reset")

    def release(self, token):
        return self.control("/__release/" + token)


class PetstoreProc(Proc):
    """The C sample backend (samples/petstore-backend.c)."""

    def __init__(self, workdir, port=None, quiet=True):
        self.port = port or free_port()
        argv = [BACKEND_BIN, "-a", "127.0.0.1", "-p", str(self.port)]
        if quiet:
            argv.append("-q")
        super().__init__(argv, workdir, "petstore-%d" % self.port)
        wait_port(self.port, self.proc, 10, "petstore-backend", self.logs)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


class Gateway(Proc):
    """mgw-evd on a gateway file written into workdir.

    apis: list of OpenAPI docs (dicts, emitted as separate YAML files) or raw YAML text."""

    def __init__(self, workdir, apis, port=None, limits=None, log=None, args=None,
                 extra=None, name="gateway", wait=True, env=None):
        self.port = port or free_port()
        self.workdir = workdir
        files = []
        for i, a in enumerate(apis):
            fn = "%s-api%d.yaml" % (name, i)
            with open(os.path.join(workdir, fn), "w") as f:
                f.write(a if isinstance(a, str) else to_yaml(a))
            files.append(fn)
        conf = {"listeners": [{"address": "127.0.0.1", "port": self.port}]}
        if limits:
            conf["limits"] = limits
        if log:
            conf["log"] = log
        if extra:
            conf.update(extra)
        conf["apis"] = files
        self.config_path = os.path.join(workdir, name + ".yaml")
        with open(self.config_path, "w") as f:
            f.write(to_yaml(conf))
        super().__init__([MGW_BIN, "-c", self.config_path] + list(args or []), workdir,
                         name, env=env)
        if wait:
            wait_port(self.port, self.proc, 15, "mgw-evd", self.logs)

    def request(self, method, target, **kw):
        return request(self.port, method, target, **kw)

    def conn(self, timeout=10):
        return HttpConn(self.port, timeout=timeout)

    def sanitizer_report(self):
        err = self.stderr()
        for m in SANITIZER_MARKERS:
            if m in err:
                return err
        return None


# ---------------------------------------------------------------------------------------
# A raw HTTP/1.1 client: sends exactly what it is given, parses strictly.

class Response:
    def __init__(self):
        self.status = None
        self.reason = ""
        self.version = ""
        self.headers = []       # [(name, value)] in order
        self.body = b""
        self.interim = []       # [(status, headers)] of 1xx responses
        self.complete = False   # body framing satisfied
        self.framing = None     # "content-length", "chunked", "close", "none"
        self.raw_head = b""

    def header(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has(self, name):
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def echo(self):
        """The backend echo, with headers as a list and a 'hmap' dict of lists."""
        e = self.json()
        e["hmap"] = {}
        for n, v in e["headers"]:
            e["hmap"].setdefault(n.lower(), []).append(v)
        if e.get("body_b64"):
            e["body_bytes"] = base64.b64decode(e["body"])
        else:
            e["body_bytes"] = e["body"].encode("utf-8")
        return e

    def __repr__(self):
        b = self.body[:300]
        return "<Response %s %s headers=%r body=%r%s>" % (
            self.status, self.reason, self.headers, b, "..." if len(self.body) > 300 else "")


class HttpConn:
    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout * SLOW)
        self.buf = b""
        self.eof = False
        self.host = "%s:%d" % (host, port)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def _more(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _until(self, marker):
        while marker not in self.buf:
            if not self._more():
                return None
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _exact(self, n):
        while len(self.buf) < n:
            if not self._more():
                out, self.buf = self.buf, b""
                return out
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, method, target, headers=None, body=None, host=True, chunked=False):
        hdrs = list(headers or [])
        names = {n.lower() for n, _ in hdrs}
        if host and "host" not in names:
            hdrs.insert(0, ("Host", self.host))
        if body is not None and not chunked and "content-length" not in names \
                and "transfer-encoding" not in names:
            hdrs.append(("Content-Length", str(len(body))))
        if chunked:
            hdrs.append(("Transfer-Encoding", "chunked"))
        head = "%s %s HTTP/1.1\r\n" % (method, target)
        head += "".join("%s: %s\r\n" % h for h in hdrs) + "\r\n"
        data = head.encode("latin-1")
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            if chunked:
                step = max(1, len(body) // 3)
                for i in range(0, len(body), step):
                    data += b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                data += b"0\r\n\r\n"
            else:
                data += body
        self.sock.sendall(data)

    def read_head(self):
        """Read one response head, skipping (and recording) 1xx responses."""
        r = Response()
        while True:
            head = self._until(b"\r\n\r\n")
            if head is None:
                r.raw_head = self.buf
                return r if r.interim else None
            lines = head.split(b"\r\n")
            status_line = lines[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise AssertionError("not an HTTP response: %r" % head[:200])
            code = int(parts[1])
            hdrs = []
            for ln in lines[1:]:
                n, _, v = ln.decode("latin-1").partition(":")
                hdrs.append((n.strip(), v.strip()))
            if 100 <= code < 200 and code != 101:
                r.interim.append((code, hdrs))
                continue
            r.version, r.status = parts[0], code
            r.reason = parts[2] if len(parts) > 2 else ""
            r.headers = hdrs
            r.raw_head = head
            return r

    def read_body(self, r, method="GET"):
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            r.framing = "none"
            r.complete = True
            return r
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if "chunked" in te:
            r.framing = "chunked"
            parts = []
            while True:
                line = self._until(b"\r\n")
                if line is None:
                    break
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while True:
                        t = self._until(b"\r\n")
                        if t is None or t == b"":
                            break
                    r.complete = True
                    break
                piece = self._exact(n)
                parts.append(piece)
                if len(piece) < n or self._exact(2) != b"\r\n":
                    break
            r.body = b"".join(parts)
        elif cl is not None:
            r.framing = "content-length"
            n = int(cl)
            r.body = self._exact(n)
            r.complete = len(r.body) == n
        else:
            r.framing = "close"
            while self._more():
                pass
            r.body, self.buf = self.buf, b""
            r.complete = True
        return r

    def read_response(self, method="GET"):
        r = self.read_head()
        if r is None or r.status is None:
            return r
        return self.read_body(r, method)

    def request(self, method, target, headers=None, body=None, **kw):
        self.send(method, target, headers, body, **kw)
        return self.read_response(method)


def request(port, method, target, headers=None, body=None, timeout=10, **kw):
    """One request on a fresh connection. Raises on no response at all."""
    with HttpConn(port, timeout=timeout) as c:
        r = c.request(method, target, headers, body, **kw)
    if r is None:
        raise AssertionError("connection closed without a response to %s %s" % (method, target))
    return r


def fault(r):
    """Parse a gateway fault body: returns (code, message, description)."""
    j = r.json()
    assert "fault" in j, r
    f = j["fault"]
    return f.get("code"), f.get("message"), f.get("description")


def access_log_re():
    return re.compile(r'^(?P<ts>\S+) (?P<client>\S+) "(?P<method>[A-Z]+) (?P<target>\S+)" '
                      r'(?P<status>\d{3}) (?P<bytes>\d+) (?P<backend>\S+) '
                      r'(?P<ms>\d+(?:\.\d+)?)ms rid=(?P<rid>\d+)$')
