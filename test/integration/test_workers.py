"""--workers N: N worker processes share the listen port (SO_REUSEPORT); a
worker that dies is restarted; SIGTERM stops them all and the master exits 0."""
import os
import signal

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


def test_workers_flag_validated(gateway):
    import subprocess
    from harness import MGW_BIN
    p = subprocess.run([MGW_BIN, "-c", "x.yaml", "--workers", "0"], capture_output=True)
    assert p.returncode == 2 and b"--workers" in p.stderr
