"""--workers N: N worker processes share the listen port (SO_REUSEPORT); a
worker that dies is restarted; SIGTERM stops them all and the master exits 0."""
import os
import re
import signal
import time

from harness import openapi, wait_for


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []




def test_workers_serve_restart_and_stop(gateway, backend):
    b = backend("w")
    g = gateway([openapi("/w", {"/x": {"get": None}}, endpoints=[b.url])], args=["--workers", "2"])
    kids = wait_for(lambda: len(children(g.pid)) == 2 and children(g.pid), 5)
    assert len(kids) == 2, kids
    for _ in range(20):
        assert g.request("GET", "/w/x").status == 200
    os.kill(kids[0], signal.SIGKILL)
    again = wait_for(lambda: len(children(g.pid)) == 2 and kids[0] not in children(g.pid)
                     and children(g.pid), 5)
    assert again and kids[0] not in again and kids[1] in again, again
    assert "killed by signal 9; restarting it" in g.stderr()
    for _ in range(20):
        assert g.request("GET", "/w/x").status == 200
    rc = g.stop()
    assert rc == 0, g.stderr()
    for k in again:
        assert not os.path.exists("/proc/%d" % k) or open("/proc/%d/stat" % k).read().split()[2] == "Z"


def test_request_ids_are_unique_across_workers_and_restarts(gateway, backend, workdir):
    log = os.path.join(workdir, "access.log")
    g = two_workers(gateway, backend, "wr", log)
    for t in [threading_request(g, "/wr/x") for _ in range(30)]:
        t.join(15)
    os.kill(children(g.pid)[0], signal.SIGKILL)
    wait_for(lambda: "restarting it" in g.stderr() and len(children(g.pid)) == 2, 10)
    for _ in range(10):
        assert g.request("GET", "/wr/x").status == 200
    assert g.stop() == 0, g.stderr()
    rids = [int(l.rsplit("rid=", 1)[1]) for l in open(log).read().splitlines()]
    assert len(rids) == 40 and len(set(rids)) == 40, sorted(rids)
    err = g.stderr()
    assert "[main/w0]" in err and "[main/w1]" in err, err


def test_workers_flag_validated(gateway):
    import subprocess
    from harness import MGW_BIN
    p = subprocess.run([MGW_BIN, "-c", "x.yaml", "--workers", "0"], capture_output=True)
    assert p.returncode == 2 and b"--workers" in p.stderr


def test_second_instance_with_workers_refused(gateway, backend):
    b = backend("w2")
    api = openapi("/w2", {"/x": {"get": None}}, endpoints=[b.url])
    g = gateway([api], args=["--workers", "2"])
    g2 = gateway([api], port=g.port, args=["--workers", "2"], wait=False)
    assert g2.wait(10) == 1
    assert "cannot listen on 127.0.0.1:%d" % g.port in g2.stderr()
    assert g.request("GET", "/w2/x").status == 200


def test_long_access_log_lines_stay_whole_with_workers(gateway, backend, workdir):
    # Each line is longer than PIPE_BUF: a file still takes it in one append.
    log = os.path.join(workdir, "access.log")
    g = two_workers(gateway, backend, "wl", log)
    assert_whole_lines(g, "/wl/x?q=", "a" * 6000, 40, lambda: open(log).read())


def test_access_log_batches_to_a_pipe_stay_whole_with_workers(gateway, backend, workdir):
    # Lines shorter than PIPE_BUF, batches longer: a batch must be cut at line
    # ends, or the two workers' writes interleave inside lines.
    import threading
    fifo = os.path.join(workdir, "access.fifo")
    os.mkfifo(fifo)
    got = []

    def slow_reader():
        # Reading slowly keeps the pipe full, so writes have to wait for room
        # and a write longer than PIPE_BUF goes in several pieces.
        fd = os.open(fifo, os.O_RDONLY)
        time.sleep(0.5)
        chunks = []
        while True:
            c = os.read(fd, 512)
            if not c:
                break
            chunks.append(c)
            time.sleep(0.001)
        os.close(fd)
        got.append(b"".join(chunks))
    reader = threading.Thread(target=slow_reader)
    reader.start()
    g = two_workers(gateway, backend, "wp", fifo)

    def read_all():
        assert g.stop() == 0
        reader.join(10)
        # The pipe is non-blocking: what did not fit was dropped, and counted.
        dropped = sum(int(n) for n in re.findall(r"(\d+) lines (?:were )?dropped", g.stderr()))
        return got[0].decode() + "dropped\n" * dropped
    assert_whole_lines(g, "/wp/x?q=", "p" * 1500, 120, read_all)


def two_workers(gateway, backend, name, access_log):
    """A gateway of two running workers serving /NAME/x, logging to access_log."""
    b = backend(name)
    g = gateway([openapi("/" + name, {"/x": {"get": None}}, endpoints=[b.url])],
                args=["--workers", "2", "--access-log", access_log])
    wait_for(lambda: len(children(g.pid)) == 2, 5)
    return g


def assert_whole_lines(g, path, q, count, read):
    threads = [threading_request(g, path + q) for _ in range(count)]
    for t in threads:
        t.join(15)
    lines = read().splitlines()
    assert len(lines) == count, len(lines)
    lines = [l for l in lines if l != "dropped"]
    assert all(l.endswith(tuple("rid=%d" % i for i in range(1, 1000))) and q in l for l in lines)


def threading_request(g, target):
    import threading
    t = threading.Thread(target=lambda: g.request("GET", target, timeout=10))
    t.start()
    return t
