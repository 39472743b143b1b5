"""Running out of descriptors pauses accepting with a growing back-off (one
log line, not one per attempt) and the gateway serves again once
connections close."""
import resource
import socket
import time

from harness import SLOW, openapi


def test_fd_exhaustion_backs_off_and_recovers(gateway, backend):
    b = backend("fd")
    g = gateway([openapi("/fd", {"/x": {"get": None}}, endpoints=[b.url])])
    assert g.request("GET", "/fd/x").status == 200
    resource.prlimit(g.pid, resource.RLIMIT_NOFILE, (48, 48))
    socks = []
    try:
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", g.port), timeout=2)
            socks.append(s)
        time.sleep(1.5 * SLOW)
        err = g.stderr()
        assert err.count("pausing accepts") == 1, err
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10 * SLOW
    status = None
    while time.monotonic() < deadline:
        try:
            status = g.request("GET", "/fd/x", timeout=3).status
            if status == 200:
                break
        except (OSError, AssertionError):
            pass
        time.sleep(0.2)
    assert status == 200
    assert "accepting connections again" in g.stderr()
