"""Command line, config errors (file:line:col, exit 1, nothing bound), -t, signals,
access log."""

import os
import re
import signal
import subprocess
import time

import pytest

from harness import (MGW_BIN, ROOT, SANITIZER_MARKERS, SLOW, access_log_re, free_port,
                     openapi, port_open, to_yaml, wait_for)


def run(args, cwd=None, timeout=20):
    p = subprocess.run([MGW_BIN] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout * SLOW)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    for m in SANITIZER_MARKERS:
        assert m not in err, err
    return p.returncode, out, err


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def gateway_file(port, apis, extra=""):
    return ("listeners:\n  - address: 127.0.0.1\n    port: %d\n%sapis:\n" % (port, extra)
            + "".join("  - %s\n" % a for a in apis))


GOOD_API = """openapi: 3.0.0
info:
  title: good
  version: 1.0.0
x-wso2-basePath: /good/v1
x-wso2-production-endpoints:
  urls:
    - http://127.0.0.1:1/backend
paths:
  /pets:
    get:
      responses:
        "200":
          description: ok
"""


def test_version():
    rc, out, err = run(["--version"])
    assert rc == 0
    assert re.search(r"\d+\.\d+\.\d+", out + err), (out, err)


def test_help():
    rc, out, err = run(["-h"])
    assert rc == 0
    assert "-c" in out + err


@pytest.mark.parametrize("args", [["--bogus-flag"], ["-Z"], ["--access-log"],
                                  ["--etcdtimer=abc", "-t", "-c", "x.yaml"]])
def test_bad_flag_exit_2_one_line(args, workdir):
    rc, out, err = run(args, cwd=workdir)
    assert rc == 2, (rc, out, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err


def test_check_good_config(workdir):
    write(workdir, "good.yaml", GOOD_API)
    port = free_port()
    gw = write(workdir, "gw.yaml", gateway_file(port, ["good.yaml"]))
    rc, out, err = run(["-t", "-c", gw])
    assert rc == 0, (out, err)
    assert "/good/v1" in out + err, (out, err)
    assert not port_open(port)


def test_check_bare_openapi(workdir):
    p = write(workdir, "good.yaml", GOOD_API)
    rc, out, err = run(["-t", "-c", p])
    assert rc == 0, (out, err)


def test_check_samples():
    for f in ("samples/petstore.yaml", "samples/gateway.yaml"):
        rc, out, err = run(["-t", "-c", os.path.join(ROOT, f)])
        assert rc == 0, (f, out, err)
        assert "/petstore/v1" in out + err
    rc, out, err = run(["-t", "-c", os.path.join(ROOT, "samples/gateway.yaml")])
    assert "/store/v1" in out + err


def check_error(workdir, name, text, line, col=None, gwfile=True, words=()):
    """Write a broken API file, load it (through a gateway file), expect exit 1 and an
    error 'NAME:LINE:COL: ...' on stderr, and nothing listening."""
    path = write(workdir, name, text)
    port = free_port()
    if gwfile:
        cfg = write(workdir, "gw-" + name, gateway_file(port, [name]))
    else:
        cfg = path
    for mode in (["-t"], []):
        rc, out, err = run(mode + ["-c", cfg], timeout=15)
        assert rc == 1, (mode, rc, out, err)
        pat = re.escape(name) + r":%s:%s: \S" % (r"\d+" if line is None else line,
                                              r"\d+" if col is None else col)
        assert re.search(pat, err), "expected %s in stderr:\n%s" % (pat, err)
        for w in words:
            assert w.lower() in err.lower(), (w, err)
        assert not port_open(port)


def test_error_yaml_syntax(workdir):
    text = GOOD_API.replace("  /pets:\n", "  /pets:\n   bad: [unclosed\n")
    check_error(workdir, "syntax.yaml", text, line=None, col=None)


def test_error_bad_endpoint_url(workdir):
    text = GOOD_API.replace("    - http://127.0.0.1:1/backend", "    - ftp://example.com/x")
    check_error(workdir, "badurl.yaml", text, line=8, words=("ftp://example.com/x",))


def test_error_bad_etcd_spec(workdir):
    text = GOOD_API.replace("    - http://127.0.0.1:1/backend", "    - etcd (key-without-comma)")
    check_error(workdir, "badetcd.yaml", text, line=8)


def test_error_duplicate_key(workdir):
    text = GOOD_API.replace("x-wso2-basePath: /good/v1\n",
                            "x-wso2-basePath: /good/v1\nx-wso2-basePath: /again\n")
    check_error(workdir, "dup.yaml", text, line=6, words=("x-wso2-basePath",))


def test_error_dangling_endpoint_ref(workdir):
    text = GOOD_API.replace(
        "    get:\n",
        "    get:\n      x-wso2-production-endpoints: \"#/x-wso2-endpoints/nowhere\"\n")
    check_error(workdir, "ref.yaml", text, line=12, words=("nowhere",))


def test_error_bare_openapi_reported_with_its_name(workdir):
    text = GOOD_API.replace("    - http://127.0.0.1:1/backend", "    - not a url")
    check_error(workdir, "bare.yaml", text, line=8, gwfile=False)


def test_error_gateway_file_bad_port(workdir):
    write(workdir, "good.yaml", GOOD_API)
    cfg = write(workdir, "gwbad.yaml",
                "listeners:\n  - address: 127.0.0.1\n    port: 99999\napis:\n  - good.yaml\n")
    rc, out, err = run(["-t", "-c", cfg])
    assert rc == 1
    assert re.search(r"gwbad\.yaml:3:\d+: \S", err), err


def test_error_missing_api_file(workdir):
    port = free_port()
    cfg = write(workdir, "gwmiss.yaml", gateway_file(port, ["does-not-exist.yaml"]))
    rc, out, err = run(["-c", cfg])
    assert rc == 1
    assert "does-not-exist.yaml" in err
    assert re.search(r"gwmiss\.yaml:5:\d+: \S", err), err


def test_every_error_reported(workdir):
    text = GOOD_API.replace("    - http://127.0.0.1:1/backend",
                            "    - ftp://one.example\n    - gopher://two.example")
    path = write(workdir, "two.yaml", text)
    rc, out, err = run(["-t", "-c", path])
    assert rc == 1
    assert re.search(r"two\.yaml:8:\d+: ", err) and re.search(r"two\.yaml:9:\d+: ", err), err


def test_missing_config_file(workdir):
    rc, out, err = run(["-c", os.path.join(workdir, "nope.yaml")])
    assert rc == 1
    assert "nope.yaml" in err


def test_port_in_use_fails_cleanly(gateway, backend):
    b = backend("b")
    doc = openapi("/pu", {"/x": {"get": None}}, endpoints=[b.url])
    g = gateway([doc], port=b.port, wait=False)
    assert g.wait(10) != 0
    assert str(b.port) in g.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_clean_exit(gateway, backend, sig):
    b = backend("b")
    g = gateway([openapi("/sg", {"/x": {"get": None}}, endpoints=[b.url])])
    assert g.request("GET", "/sg/x").status == 200
    t0 = time.monotonic()
    rc = g.stop(sig)
    assert rc == 0, g.logs()
    assert time.monotonic() - t0 < 5 * SLOW
    assert not port_open(g.port)


def test_stop_refuses_new_clients_and_finishes_requests_in_flight(gateway, backend):
    import socket
    import threading
    b = backend("b")
    g = gateway([openapi("/dr", {"/x": {"get": None}}, endpoints=[b.url])])
    got = []

    def slow_request():
        try:
            got.append(g.request("GET", "/dr/x", headers=[("X-Test-Mode", "delay=1500")]))
        except Exception as e:
            got.append(e)
    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.5)
    g.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # Refused, not accepted into a backlog and reset at exit.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", g.port), timeout=5).close()
    t.join(10)
    assert got and getattr(got[0], "status", None) == 200, got
    assert g.stop() == 0, g.logs()
    assert "requests in flight: 1" in g.stderr(), g.stderr()


def test_access_log_line(gateway, backend):
    b = backend("b")
    g = gateway([openapi("/al", {"/x": {"get": None, "post": None}}, endpoints=[b.url + "/be"])])
    r = g.request("GET", "/al/x?q=1")
    assert r.status == 200
    r = g.request("POST", "/al/x", body=b"12345")
    assert r.status == 200
    r404 = g.request("GET", "/al/none")
    assert r404.status == 404
    g.stop()
    lines = [l for l in g.stdout().splitlines() if l.strip()]
    assert len(lines) == 3, g.stdout()
    rx = access_log_re()
    ms = [rx.match(l) for l in lines]
    assert all(ms), lines
    m = ms[0]
    assert m["client"].startswith("127.0.0.1"), m.group(0)
    assert (m["method"], m["target"], m["status"]) == ("GET", "/al/x?q=1", "200")
    assert int(m["bytes"]) == len(r.body) or int(m["bytes"]) > 0
    assert m["backend"] == "%s/be/x?q=1" % b.url or m["backend"].startswith(b.url), m["backend"]
    assert (ms[1]["method"], ms[1]["status"]) == ("POST", "200")
    assert (ms[2]["status"], ms[2]["target"]) == ("404", "/al/none")
    assert int(ms[2]["bytes"]) == len(r404.body)
    rids = [int(x["rid"]) for x in ms]
    assert len(set(rids)) == 3, rids


def test_access_log_off(gateway, backend):
    b = backend("b")
    g = gateway([openapi("/al", {"/x": {"get": None}}, endpoints=[b.url])],
                args=["--access-log=off"])
    assert g.request("GET", "/al/x").status == 200
    g.stop()
    assert g.stdout().strip() == ""


def test_access_log_to_file(gateway, backend, workdir):
    b = backend("b")
    path = os.path.join(workdir, "access.log")
    g = gateway([openapi("/al", {"/x": {"get": None}}, endpoints=[b.url])],
                log={"access_log": path})
    assert g.request("GET", "/al/x?f=1").status == 200
    g.stop()
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and access_log_re().match(lines[0]), lines
    assert '"GET /al/x?f=1" 200' in lines[0]
    assert g.stdout().strip() == ""


def test_access_log_flag_overrides_file(gateway, backend, workdir):
    b = backend("b")
    path = os.path.join(workdir, "flag.log")
    g = gateway([openapi("/al", {"/x": {"get": None}}, endpoints=[b.url])],
                log={"access_log": "off"}, args=["--access-log=" + path])
    assert g.request("GET", "/al/x").status == 200
    g.stop()
    with open(path) as f:
        assert len(f.read().splitlines()) == 1


def test_bare_openapi_default_listener_is_9090(workdir):
    """A bare OpenAPI file listens on 0.0.0.0:9090 (skipped when 9090 is taken)."""
    if port_open(9090):
        pytest.skip("port 9090 in use")
    path = write(workdir, "bare.yaml", GOOD_API)
    p = subprocess.Popen([MGW_BIN, "-c", path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline and not port_open(9090) and p.poll() is None:
            time.sleep(0.05)
        assert port_open(9090)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(10 * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            rc = None
        err = p.stderr.read().decode("utf-8", "replace")
        p.stderr.close()
    assert rc == 0, err
    for m in SANITIZER_MARKERS:
        assert m not in err, err


def test_verbose_debug_logging(gateway, backend):
    b = backend("b")
    g = gateway([openapi("/vb", {"/x": {"get": None}}, endpoints=[b.url])], args=["-v"])
    assert g.request("GET", "/vb/x").status == 200
    g.stop()
    assert re.search(r"\bdebug\b", g.stderr(), re.I), g.stderr()


def test_info_level_quiet_per_request(gateway, backend):
    """At the default level a successful request logs nothing on stderr."""
    b = backend("b")
    g = gateway([openapi("/iq", {"/x": {"get": None}}, endpoints=[b.url])])
    before = g.stderr()
    for _ in range(5):
        assert g.request("GET", "/iq/x").status == 200
    time.sleep(0.2)
    assert g.stderr() == before, g.stderr()[len(before):]


@pytest.mark.parametrize("args,needle", [
    (["-c"], "option -c needs a value"),
    (["--config"], "option --config needs a value"),
    (["-c", "x.yaml", "--etcdtimer"], "option --etcdtimer needs a value"),
    (["-c", "x.yaml", "--version=1"], "--version=1"),
    (["-c", "x.yaml", "--etcdpassword-file=/nonexistent/pw"], "/nonexistent/pw"),
])
def test_missing_or_bad_option_values_named(args, needle, tmp_path):
    (tmp_path / "x.yaml").write_text(
        "openapi: 3.0.0\ninfo: {title: t, version: '1'}\nx-wso2-basePath: /t\n"
        "x-wso2-production-endpoints: {urls: ['http://127.0.0.1:9/']}\n"
        "paths: {/a: {get: {responses: {'200': {description: ok}}}}}\n")
    rc, out, err = run(args, cwd=str(tmp_path))
    assert rc == 2, (rc, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert all(32 <= ord(ch) < 127 for ch in lines[0]), repr(lines[0])


def test_access_log_reader_that_stops_reading_does_not_stop_traffic(gateway, backend, workdir):
    """A stalled pipe reader costs access lines, counted and reported, not traffic."""
    b = backend("b")
    fifo = os.path.join(workdir, "access.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # a reader that does not read
    try:
        g = gateway([openapi("/st", {"/x": {"get": None}}, endpoints=[b.url])],
                    args=["--access-log", fifo])
        c = g.conn()
        q = "q" * 1000
        for _ in range(300):                             # ~300 KiB of lines; pipe and gateway hold 64 each
            assert c.request("GET", "/st/x?" + q).status == 200
        assert "dropping lines until it does" in g.stderr(), g.stderr()
        got = []

        def drain():
            while True:
                try:
                    chunk = os.read(rfd, 65536)
                except BlockingIOError:
                    return
                got.append(chunk)
        drain()
        assert c.request("GET", "/st/x").status == 200
        assert wait_for(lambda: drain() or re.search(r"writing again; \d+ lines were dropped",
                                                     g.stderr()), 5), g.stderr()
        data = b"".join(got)
        assert data.endswith(b"\n"), data[-200:]
        lines = data.decode().splitlines()
        assert len(lines) > 50 and all(re.search(r" rid=\d+$", l) for l in lines), lines
        assert g.stop() == 0, g.logs()
    finally:
        os.close(rfd)
