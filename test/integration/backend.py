#!/usr/bin/python3
"""A raw-socket HTTP/1.1 test backend that can misbehave on demand.

Run:    /usr/bin/python3 backend.py --port N [--name NAME] [--address 127.0.0.1]
Import: b = Backend(port, name).start(); ...; b.stop()

By default every request is answered 200 with a JSON echo of what arrived:
  {"method", "target", "version", "headers": [[name, value], ...], "body" (text, or
   base64 with "body_b64": true), "body_len", "conn_id", "req_no_on_conn", "backend"}
with Content-Length and Content-Type: application/json, on a keep-alive connection.

Behaviour on demand, through the request header X-Test-Mode: a list of
"key[=value]" items separated by ';' (e.g. "interim=100,103;status=201"):
  close             close the connection before any response byte
  close-mid-body    send headers (Content-Length: 1000) and 10 body bytes, then close
  hang              never answer (the connection stays open until the peer closes)
  delay=MS          answer after MS milliseconds
  no-length         respond without Content-Length, body delimited by closing the connection
  chunked           respond with Transfer-Encoding: chunked, in several chunks
  te=VALUE          respond with Transfer-Encoding: VALUE and the body as one chunk
  chunk-size=LINE   respond chunked with the body "hello" under the size line LINE
                    (percent-decoded: "5%3Bx" sends "5;x")
  nul-header        add the response header "X-Nul: a<NUL>b"
  stream=N,MS       send the body in N pieces, MS ms apart (Content-Length set)
  gate=TOKEN        send headers and the first piece of the body ("first-piece\\n"), then
                    wait until GET /__release/TOKEN arrives (or 10 s) and send the rest
  interim=100,103   send these 1xx interim responses before the final one
  status=N          final status N (the echo body is kept unless the status forbids a body)
  bogus-body        with 204/304: send "Content-Length: 5" and 5 bytes anyway
  hop               add hop-by-hop headers to the response (Connection: keep-alive, X-Hop,
                    X-Hop, Keep-Alive, Proxy-Foo, Trailer, Upgrade) and X-Normal: yes
  close-next        answer normally, then close this connection when the next request on it
                    arrives, without answering it (a stale keep-alive connection)
  conn-close        answer with "Connection: close", then close
  close-after       answer with keep-alive semantics, then silently close the connection
  garbage           send bytes that are not HTTP, then close
  big=N             respond with an N-byte body (bytes i % 251, Content-Type octet-stream)
  smuggle           after the response, send a second unsolicited response ("EVIL!") on
                    the same connection, as if Content-Length had been wrong
  no-echo           respond with the body "ok" instead of the echo
  header=NAME:VALUE add a response header (may be repeated)
Equivalent path form: a target starting with /__mode/<mode>/ (one item, e.g.
/__mode/no-length/x) behaves as if X-Test-Mode carried <mode>.

Control paths (hit them directly, not through the gateway):
  GET /__stats          {"connections" (that carried a non-control request), "accepted"
                        (all), "open", "requests" (non-control), "name"}
  GET /__requests       every request recorded so far (same shape as the echo)
  GET /__reset          zero the counters and the record
  GET /__release/TOKEN  release a gate=TOKEN response
"""

import argparse
import base64
import json
import socket
import sys
import threading
import time
import urllib.parse

MAX_HEAD = 256 * 1024


class ClientGone(Exception):
    pass


class Conn:
    def __init__(self, sock, cid):
        self.sock = sock
        self.cid = cid
        self.buf = b""
        self.nreq = 0
        self.close_next = False

    def read_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise ClientGone()
        self.buf += data

    def read_until(self, marker, limit):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ClientGone()
            self.read_more()
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self.read_more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse_modes(value):
    modes = {}
    headers = []
    if not value:
        return modes, headers
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        k, _, v = item.partition("=")
        k = k.strip().lower()
        if k == "header":
            n, _, hv = v.partition(":")
            headers.append((n.strip(), hv.strip()))
        else:
            modes[k] = v.strip()
    return modes, headers


class Backend:
    def __init__(self, port=0, name="backend", address="127.0.0.1"):
        self.address = address
        self.name = name
        self.lock = threading.Lock()
        self.gates = {}
        self.connections = 0
        self.open = 0
        self.requests = 0
        self.record = []
        self.used_conns = set()   # ids of connections that carried a non-control request
        self.socks = set()
        self.stopping = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((address, port))
        self.lsock.listen(256)
        self.port = self.lsock.getsockname()[1]
        self.thread = None

    @property
    def url(self):
        return "http://%s:%d" % (self.address, self.port)

    def start(self):
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self):
        self._accept_loop()

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
            for ev in self.gates.values():
                ev.set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _accept_loop(self):
        self.accept_loop(self.lsock, self._serve)

    def accept_loop(self, lsock, serve):
        """Accept on lsock, counting connections, each served by serve(sock, cid)
        in its own thread (the TLS backend passes a serve that wraps first)."""
        while not self.stopping:
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open += 1
                cid = self.connections
                self.socks.add(s)
            threading.Thread(target=serve, args=(s, cid), daemon=True).start()

    def _gate(self, token):
        with self.lock:
            ev = self.gates.get(token)
            if ev is None:
                ev = self.gates[token] = threading.Event()
            return ev

    # -- one connection -------------------------------------------------------------------
    def _serve(self, s, cid):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(120)
        c = Conn(s, cid)
        try:
            while not self.stopping:
                if not self._one_request(c):
                    break
        except (ClientGone, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.open -= 1
                self.socks.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def _read_request(self, c):
        # skip stray CRLFs between requests
        while True:
            while len(c.buf) < 2:
                c.read_more()
            if c.buf.startswith(b"\r\n"):
                c.buf = c.buf[2:]
                continue
            break
        head = c.read_until(b"\r\n\r\n", MAX_HEAD)
        lines = head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            raise ValueError("bad request line")
        method, target, version = parts
        headers = []
        for ln in lines[1:]:
            if not ln:
                continue
            n, _, v = ln.decode("latin-1").partition(":")
            headers.append([n, v.strip()])
        hmap = {}
        for n, v in headers:
            hmap.setdefault(n.lower(), []).append(v)
        body = b""
        te = ",".join(hmap.get("transfer-encoding", [])).lower()
        framing = "none"
        if "chunked" in te:
            framing = "chunked"
            chunks = []
            while True:
                sz = c.read_until(b"\r\n", 1024).split(b";")[0].strip()
                n = int(sz, 16)
                if n == 0:
                    # trailers
                    while c.read_until(b"\r\n", MAX_HEAD) != b"":
                        pass
                    break
                chunks.append(c.read_exact(n))
                c.read_exact(2)
            body = b"".join(chunks)
        elif "content-length" in hmap:
            framing = "content-length"
            n = int(hmap["content-length"][0])
            body = c.read_exact(n)
        return method, target, version, headers, hmap, body, framing

    def _send(self, c, data):
        c.sock.sendall(data)

    def _one_request(self, c):
        method, target, version, headers, hmap, body, framing = self._read_request(c)
        c.nreq += 1
        if c.close_next:
            # stale keep-alive connection: the request arrives on a dead peer
            with self.lock:
                self.requests += 1
                self.used_conns.add(c.cid)
                self.record.append(self._echo(c, method, target, version, headers, body,
                                              framing, stale=True))
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        if target.startswith("/__") and not target.startswith("/__mode/"):
            return self._control(c, method, target)
        with self.lock:
            self.requests += 1
            self.used_conns.add(c.cid)
            echo = self._echo(c, method, target, version, headers, body, framing)
            self.record.append(echo)

        modes, extra_headers = parse_modes(";".join(hmap.get("x-test-mode", [])))
        if target.startswith("/__mode/"):
            rest = target[len("/__mode/"):]
            m, _, _ = rest.partition("/")
            pm, ph = parse_modes(m)
            modes.update(pm)
            extra_headers += ph

        client_close = any("close" in v.lower() for v in hmap.get("connection", []))
        if version == "HTTP/1.0" and not any("keep-alive" in v.lower()
                                             for v in hmap.get("connection", [])):
            client_close = True

        if "conn-close" in modes:
            client_close = True
        if "delay" in modes:
            time.sleep(int(modes["delay"]) / 1000.0)
        if "close" in modes:
            c.sock.shutdown(socket.SHUT_RDWR)
            return False
        if "hang" in modes:
            # wait until the peer goes away (or we are stopped)
            c.sock.settimeout(60)
            try:
                while not self.stopping:
                    if not c.sock.recv(65536):
                        break
            except OSError:
                pass
            return False
        if "garbage" in modes:
            self._send(c, b"THIS IS NOT HTTP AT ALL\x00\x01\x02\r\n\r\ngarbage garbage\r\n")
            c.sock.shutdown(socket.SHUT_RDWR)
            return False

        for code in [x for x in modes.get("interim", "").split(",") if x.strip()]:
            code = int(code)
            reason = {100: "Continue", 102: "Processing", 103: "Early Hints"}.get(code, "Info")
            extra = b"Link: </style.css>; rel=preload; as=style\r\n" if code == 103 else b""
            self._send(c, b"HTTP/1.1 %d %s\r\n%s\r\n" % (code, reason.encode(), extra))
            time.sleep(0.02)

        status = int(modes.get("status", "200"))
        reason = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
                  404: "Not Found", 500: "Internal Server Error"}.get(status, "Status")
        if "big" in modes:
            n = int(modes["big"])
            payload = bytes(i % 251 for i in range(n))
            ctype = "application/octet-stream"
        elif "no-echo" in modes:
            payload = b"ok"
            ctype = "text/plain"
        else:
            payload = json.dumps(echo).encode()
            ctype = "application/json"

        hdrs = [("Content-Type", ctype), ("X-Backend", self.name),
                ("X-Conn-Id", str(c.cid)), ("X-Req-No", str(c.nreq)),
                ("X-Echo-Method", method)]
        hdrs += extra_headers
        if "hop" in modes:
            hdrs += [("Connection", "keep-alive, X-Hop"), ("X-Hop", "must-be-removed"),
                     ("Keep-Alive", "timeout=5, max=100"), ("Proxy-Foo", "must-be-removed"),
                     ("Trailer", "X-Trailer-Thing"), ("Upgrade", "websocket"),
                     ("X-Normal", "yes")]
        if "nul-header" in modes:
            hdrs.append(("X-Nul", "a\0b"))
        if client_close:
            hdrs.append(("Connection", "close"))

        def head(extra):
            lines = ["HTTP/1.1 %d %s" % (status, reason)]
            lines += ["%s: %s" % h for h in hdrs + extra]
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        no_body = status in (204, 304) or 100 <= status < 200
        if no_body:
            if "bogus-body" in modes:
                self._send(c, head([("Content-Length", "5")]) + b"BOGUS")
            else:
                self._send(c, head([]))
        elif method == "HEAD":
            self._send(c, head([("Content-Length", str(len(payload)))]))
        elif "close-mid-body" in modes:
            self._send(c, head([("Content-Length", "1000")]) + b"0123456789")
            time.sleep(0.05)
            c.sock.shutdown(socket.SHUT_RDWR)
            return False
        elif "no-length" in modes:
            h = [x for x in hdrs if x[0].lower() != "connection"]
            lines = ["HTTP/1.1 %d %s" % (status, reason)] + ["%s: %s" % x for x in h]
            lines.append("Connection: close")
            self._send(c, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            for i in range(0, len(payload), 8192):
                self._send(c, payload[i:i + 8192])
            c.sock.shutdown(socket.SHUT_RDWR)
            return False
        elif "te" in modes:
            self._send(c, head([("Transfer-Encoding", modes["te"])]) +
                       b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        elif "chunk-size" in modes:
            self._send(c, head([("Transfer-Encoding", "chunked")]) +
                       urllib.parse.unquote_to_bytes(modes["chunk-size"]) +
                       b"\r\nhello\r\n0\r\n\r\n")
        elif "chunked" in modes:
            out = head([("Transfer-Encoding", "chunked")])
            self._send(c, out)
            step = max(1, len(payload) // 4)
            for i in range(0, len(payload), step):
                piece = payload[i:i + step]
                self._send(c, b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.01)
            self._send(c, b"0\r\n\r\n")
        elif "stream" in modes:
            n, _, ms = modes["stream"].partition(",")
            n = max(1, int(n))
            ms = int(ms or "100")
            self._send(c, head([("Content-Length", str(len(payload)))]))
            step = (len(payload) + n - 1) // n
            for i in range(0, len(payload), step):
                self._send(c, payload[i:i + step])
                time.sleep(ms / 1000.0)
        elif "split-head" in modes:
            # the head arrives in three reads, the last cut inside its final
            # CRLF, so the gateway cannot find the head's end in one chain
            out = head([("Content-Length", str(len(payload)))]) + payload
            cut = out.index(b"\r\n\r\n") + 3
            for piece in (out[:cut // 2], out[cut // 2:cut], out[cut:]):
                self._send(c, piece)
                time.sleep(0.02)
        elif "gate" in modes:
            first = b"first-piece\n"
            rest = b"rest-of-the-body\n" * 4
            self._send(c, head([("Content-Length", str(len(first) + len(rest))),
                                ("Content-Type", "text/plain")]) + first)
            self._gate(modes["gate"]).wait(10)
            self._send(c, rest)
        elif "smuggle" in modes:
            # more bytes than Content-Length says: a whole second response
            self._send(c, head([("Content-Length", str(len(payload)))]) + payload +
                       b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5"
                       b"\r\nX-Smuggled: yes\r\n\r\nEVIL!")
        else:
            self._send(c, head([("Content-Length", str(len(payload)))]) + payload)

        if "close-next" in modes:
            c.close_next = True
        if "close-after" in modes:
            time.sleep(0.05)
            c.sock.shutdown(socket.SHUT_RDWR)
            return False
        return not client_close

    def _echo(self, c, method, target, version, headers, body, framing, stale=False):
        e = {"method": method, "target": target, "version": version,
             "headers": [list(h) for h in headers], "body_len": len(body),
             "framing": framing, "conn_id": c.cid, "req_no_on_conn": c.nreq,
             "backend": self.name}
        try:
            e["body"] = body.decode("utf-8")
            e["body_b64"] = False
        except UnicodeDecodeError:
            e["body"] = base64.b64encode(body).decode()
            e["body_b64"] = True
        if stale:
            e["stale"] = True
        return e

    def _control(self, c, method, target):
        path = target.split("?")[0]
        if path == "/__stats":
            with self.lock:
                obj = {"connections": len(self.used_conns), "accepted": self.connections,
                       "open": self.open,
                       "requests": self.requests, "name": self.name}
        elif path == "/__requests":
            with self.lock:
                obj = list(self.record)
        elif path == "/__reset":
            with self.lock:
                self.used_conns = set()
                self.requests = 0
                self.record = []
            obj = {"reset": True}
        elif path.startswith("/__release/"):
            self._gate(path[len("/__release/"):]).set()
            obj = {"released": True}
        else:
            obj = {"error": "unknown control path"}
        payload = json.dumps(obj).encode()
        self._send(c, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        return True


def main():
    ap = argparse.ArgumentParser(description="misbehaving HTTP/1.1 test backend")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--name", default="backend")
    a = ap.parse_args()
    b = Backend(a.port, a.name, a.address)
    print("backend %s listening on %s:%d" % (a.name, a.address, b.port), file=sys.stderr,
          flush=True)
    try:
        b.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
