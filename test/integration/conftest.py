"""pytest fixtures for the mgw-evd integration tests.

Fixtures (reusable by other test modules, e.g. the etcd tests):
  gateway   factory: gateway(apis=[doc, ...], limits=..., log=..., args=[...], extra=...)
            -> harness.Gateway, stopped at teardown; the test fails if its stderr shows
            a sanitizer report, or if it does not exit 0 on SIGTERM.
  backend   factory: backend(name="b1") -> harness.BackendProc (test/integration/backend.py)
  petstore  factory: petstore() -> harness.PetstoreProc (the C sample backend)
  workdir   a fresh temporary directory (str)
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

TEST_TIMEOUT = int(os.environ.get("MGW_TEST_TIMEOUT", "120"))


@pytest.fixture(autouse=True)
def _time_bound():
    """Every test is bounded in time, even if a socket timeout was forgotten."""
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %d s" % TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(TEST_TIMEOUT * harness.SLOW))
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


@pytest.fixture
def backend(workdir):
    procs = []

    def make(name="b1", port=None):
        b = harness.BackendProc(workdir, name, port)
        procs.append(b)
        return b
    yield make
    for p in procs:
        p.stop(signal.SIGKILL)


@pytest.fixture
def petstore(workdir):
    procs = []

    def make(port=None, quiet=True):
        p = harness.PetstoreProc(workdir, port, quiet)
        procs.append(p)
        return p
    yield make
    for p in procs:
        p.stop()


@pytest.fixture
def gateway(workdir):
    gws = []

    def make(apis, **kw):
        g = harness.Gateway(workdir, apis, name="gateway%d" % len(gws), **kw)
        gws.append(g)
        return g
    yield make
    problems = []
    for g in gws:
        managed = g.returncode is None      # not stopped or waited for by the test
        was_alive = g.alive()
        rc = g.stop()
        rep = g.sanitizer_report()
        if rep:
            problems.append("sanitizer report in %s stderr:\n%s" % (g.name, rep[-8000:]))
        elif managed and not was_alive:
            problems.append("%s died during the test (rc=%r)\n%s" % (g.name, rc, g.logs()))
        elif managed and rc != 0:
            problems.append("%s did not exit 0 on SIGTERM (rc=%r)\n%s" % (g.name, rc, g.logs()))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def pytest_report_header(config):
    return "mgw-evd: %s\nbackend: %s" % (harness.MGW_BIN, harness.BACKEND_BIN)
