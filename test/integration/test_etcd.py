"""etcd service discovery, end to end: the real mgw-evd, a real etcd (Debian's
etcd-server) and real backends on free loopback ports. Issue 3.

Every test keeps the poll period small (300-500 ms) and is bounded to a few seconds.
"""

import os
import re
import time

import pytest

import harness
from harness import wait_for
from etcd_support import etcd, fake_member, tcp_proxy  # noqa: F401  (fixtures)

PERIOD_MS = 300
PW = "s3cret-Pw!"


def api(key_or_keys, default_url, base="/petstore/v1"):
    """One API whose /pets resource is served by etcd (key, default)."""
    return harness.openapi(base, {"/pets": {"get": None}, "/pets/{id}": {"get": None}},
                           endpoints=["etcd (%s, %s)" % (key_or_keys, default_url)],
                           title="api-" + key_or_keys)


def who(gw, path="/petstore/v1/pets"):
    r = gw.request("GET", path, timeout=5)
    assert r.status == 200, r
    return r.json()["backend"]




def etcd_args(e, user="root", timer=PERIOD_MS, url=None):
    a = ["--etcdurl=%s" % (url or e.url), "--etcdtimer=%d" % timer]
    if user:
        a.append("--etcdusername=%s" % user)
    return a


def etcd_lines(gw):
    return [ln for ln in gw.stderr().splitlines() if "[etcd]" in ln]


def no_secrets(gw, *secrets):
    logs = gw.stderr() + gw.stdout()
    for s in secrets:
        if s:
            assert s not in logs, "secret %r leaked into the logs" % s


# ------------------------------------------------------------------------------------


def test_traffic_follows_key_change_within_one_period(workdir, etcd, backend, gateway):
    e = etcd(password=PW)
    b0, b1, b2 = backend("default"), backend("b1"), backend("b2")
    e.put("petstore", b1.url + "/v2")
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e),
                 env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    r = gw.request("GET", "/petstore/v1/pets/7?x=1")
    assert r.json()["target"] == "/v2/pets/7?x=1"

    e.put("petstore", b2.url + "/v3")
    t0 = time.monotonic()
    assert wait_for(lambda: who(gw) == "b2", 3), gw.logs()
    # one poll period, with slack for a loaded machine
    assert time.monotonic() - t0 < (PERIOD_MS / 1000.0 + 1.0) * harness.SLOW
    assert gw.request("GET", "/petstore/v1/pets/7").json()["target"] == "/v3/pets/7"
    logs = gw.stderr()
    assert "Etcd Authentication Successful" in logs
    assert "Etcd periodic timer task started with a periodic time of %dms" % PERIOD_MS in logs
    assert "using API prefix /v3 at %s" % e.url in logs
    assert len(re.findall(r"etcd key 'petstore': %s/v2 -> %s/v3" % (b1.url, b2.url), logs)) == 1
    # later polls with no change log nothing new
    n = len(etcd_lines(gw))
    time.sleep(3 * PERIOD_MS / 1000.0)
    assert len(etcd_lines(gw)) == n, etcd_lines(gw)[n:]
    no_secrets(gw, PW, e.token())


def test_several_keys_in_one_poll(workdir, etcd, backend, gateway, tcp_proxy):
    e = etcd(password=PW)
    b0, b1, b2, b3 = backend("default"), backend("b1"), backend("b2"), backend("b3")
    e.put("k1", b1.url)
    e.put("k2", b2.url)
    e.put("k3", b3.url)
    px = tcp_proxy(e.port)
    apis = [api("k1", b0.url, "/a"), api("k2", b0.url, "/b"), api("k3", b0.url, "/c")]
    gw = gateway(apis, args=etcd_args(e, url=px.url), env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: [who(gw, p + "/pets") for p in ("/a", "/b", "/c")]
                    == ["b1", "b2", "b3"], 3), gw.logs()
    px.reset()
    time.sleep(6 * PERIOD_MS / 1000.0)
    txns = px.count("/kv/txn")
    # one txn per poll for all three keys: never one request per key
    assert 2 <= txns <= 8, px.counts
    assert px.count("/kv/range") == 0, px.counts
    assert px.count("/auth/authenticate") == 0, px.counts   # the token is reused


def test_key_deleted_goes_to_default(workdir, etcd, backend, gateway):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e), env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    e.delete("petstore")
    assert wait_for(lambda: who(gw) == "default", 3), gw.logs()
    assert "etcd key 'petstore': %s -> (default)" % b1.url in gw.stderr()
    e.put("petstore", b1.url)
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()


def test_bad_value_is_kept_out(workdir, etcd, backend, gateway):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e), env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    for bad in ("not a url", "ftp://127.0.0.1/x", "127.0.0.1:8080", "http://"):
        e.put("petstore", bad)
        assert wait_for(lambda: bad in gw.stderr(), 3), gw.logs()
        time.sleep(3 * PERIOD_MS / 1000.0)
        assert who(gw) == "b1"
    warns = [ln for ln in etcd_lines(gw) if " warn " in ln and "ignoring value" in ln]
    assert len(warns) == 4, warns        # once per distinct bad value, not per poll
    assert "keeping %s" % b1.url in warns[0]


def test_token_expiry_reauthenticates_without_failed_requests(workdir, etcd, backend, gateway,
                                                               tcp_proxy):
    e = etcd(password=PW, ttl=1)          # simple token: 1 s idle TTL
    b0, b1, b2 = backend("default"), backend("b1"), backend("b2")
    e.put("petstore", b1.url)
    px = tcp_proxy(e.port)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e, timer=1800, url=px.url),
                 env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    e.put("petstore", b2.url)
    seen = set()
    deadline = time.monotonic() + 5.0 * harness.SLOW
    while time.monotonic() < deadline:           # zero failed requests meanwhile
        seen.add(who(gw))
        time.sleep(0.05)
    assert "b2" in seen and who(gw) == "b2", gw.logs()
    assert px.count("/auth/authenticate") >= 2, px.counts     # the token expired between polls
    assert not [ln for ln in etcd_lines(gw) if " error " in ln or " warn " in ln], gw.logs()
    no_secrets(gw, PW)


def test_etcd_restart_recovers(workdir, etcd, backend, gateway):
    e = etcd(password=PW)
    b0, b1, b2 = backend("default"), backend("b1"), backend("b2")
    e.put("petstore", b1.url)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e), env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    e.restart()                  # simple tokens are invalidated by a restart
    e.put("petstore", b2.url)
    assert wait_for(lambda: who(gw) == "b2", 5), gw.logs()
    assert gw.alive()


def test_etcd_stopped_last_known_good_keeps_serving(workdir, etcd, backend, gateway):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e), env={"MGW_ETCD_PASSWORD": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    e.stop()
    t_end = time.monotonic() + 2.0
    n = 0
    while time.monotonic() < t_end:
        assert who(gw) == "b1"           # zero failed requests, last known good
        n += 1
    assert n > 10
    lines = [ln for ln in etcd_lines(gw) if "unreachable" in ln]
    assert len(lines) == 1, lines        # once per state change, not per poll
    e.start()
    assert wait_for(lambda: "reachable again" in gw.stderr(), 5), gw.logs()
    assert who(gw) == "b1"


def test_gateway_started_before_etcd(workdir, etcd, backend, gateway):
    e = etcd(auth=False, start=False)
    b0, b1 = backend("default"), backend("b1")
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e, user=None))
    assert who(gw) == "default"
    time.sleep(2 * PERIOD_MS / 1000.0)
    assert who(gw) == "default"
    e.start()
    e.put("petstore", b1.url)
    assert wait_for(lambda: who(gw) == "b1", 5), gw.logs()


def test_wrong_password_clear_error_defaults_no_tight_loop(workdir, etcd, backend, gateway,
                                                           tcp_proxy):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    px = tcp_proxy(e.port)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e, timer=200, url=px.url),
                 env={"MGW_ETCD_PASSWORD": "wrong-password"})
    assert wait_for(lambda: "authentication failed" in gw.stderr(), 3), gw.logs()
    t0 = time.monotonic()
    time.sleep(3.5)
    assert who(gw) == "default"
    calls = px.count("/auth/authenticate")
    # polls every 200 ms would be ~18 calls; back-off 1 s, 2 s, ... allows about 3
    assert 1 <= calls <= 4, (calls, time.monotonic() - t0)
    errs = [ln for ln in etcd_lines(gw) if " error " in ln]
    assert len(errs) == 1, errs
    assert "etcd authentication failed for user 'root'" in errs[0]
    no_secrets(gw, "wrong-password", PW)


@pytest.mark.parametrize("mode", ["hang", "garbage", "http-garbage"])
def test_bad_member_listed_first(workdir, etcd, backend, gateway, fake_member, mode):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    fake = fake_member(mode)
    # the gateway file's etcd section, with a short per-request timeout
    conf = {"etcd": {"urls": [fake.url, e.url], "username": "root",
                     "password_env": "ETCD_PW_FOR_TEST", "timer_ms": PERIOD_MS,
                     "timeout_ms": 500}}
    gw = gateway([api("petstore", b0.url)], extra=conf, env={"ETCD_PW_FOR_TEST": PW})
    assert wait_for(lambda: who(gw) == "b1", 4), gw.logs()
    lines = [ln for ln in etcd_lines(gw) if "unreachable" in ln]
    assert len(lines) == 1 and fake.url in lines[0], lines
    # the good member is remembered: the fake one is not asked again every poll
    n = fake.accepted
    time.sleep(4 * PERIOD_MS / 1000.0)
    assert fake.accepted == n
    assert who(gw) == "b1"


def test_auth_disabled_server_works_without_token(workdir, etcd, backend, gateway, tcp_proxy):
    e = etcd(auth=False)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    px = tcp_proxy(e.port)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e, url=px.url),
                 env={"MGW_ETCD_PASSWORD": PW})      # username set, server auth off
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    assert "authentication disabled" in gw.stderr()
    time.sleep(3 * PERIOD_MS / 1000.0)
    assert px.count("/auth/authenticate") == 1, px.counts    # asked once, then no token


def test_auth_required_but_no_username(workdir, etcd, backend, gateway):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e, user=None))
    assert wait_for(lambda: "requires authentication" in gw.stderr(), 3), gw.logs()
    time.sleep(3 * PERIOD_MS / 1000.0)
    assert who(gw) == "default"
    assert len([ln for ln in etcd_lines(gw) if "requires authentication" in ln]) == 1


def test_api_prefix_override(workdir, etcd, backend, gateway, tcp_proxy):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    e.put("petstore", b1.url)
    px = tcp_proxy(e.port)
    conf = {"etcd": {"urls": [px.url], "username": "root", "password_env": "ETCD_PW_FOR_TEST",
                     "timer_ms": PERIOD_MS, "api_prefix": "/v3beta"}}
    gw = gateway([api("petstore", b0.url)], extra=conf, env={"ETCD_PW_FOR_TEST": PW})
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    assert px.count("/v3beta/kv/txn") >= 1 and px.count("/version") == 0, px.counts


def test_thousand_keys(workdir, etcd, backend, gateway, tcp_proxy):
    e = etcd(password=PW)
    b0, b1 = backend("default"), backend("b1")
    n = 1000
    paths = {}
    for i in range(n):
        paths["/r%d" % i] = {"get": None, "x-wso2-production-endpoints":
                             {"urls": ["etcd (key%04d, %s/d%d)" % (i, b0.url, i)]}}
    doc = harness.openapi("/many", paths, title="many")
    # every key but the last one set
    e.put_many(("key%04d" % i, "%s/k%d" % (b1.url, i)) for i in range(n - 1))
    px = tcp_proxy(e.port)
    gw = gateway([doc], args=etcd_args(e, timer=500, url=px.url) + ["-v"],
                 env={"MGW_ETCD_PASSWORD": PW})

    def target(i):
        r = gw.request("GET", "/many/r%d" % i, timeout=5)
        assert r.status == 200, r
        return r.json()["backend"], r.json()["target"]
    # each txn is applied when it answers: wait for the first whole poll
    assert wait_for(lambda: "read 1000 keys" in gw.stderr(), 5), gw.logs()
    assert target(0) == ("b1", "/k0/r0")
    for i in (1, 127, 128, 129, 255, 256, 500, 998):
        assert target(i) == ("b1", "/k%d/r%d" % (i, i)), i
    assert target(999) == ("default", "/d999/r999")
    assert "read 1000 keys" in gw.stderr() and "in 8 txns" in gw.stderr(), gw.logs()
    # a change to a key in the last txn is followed too, read as a change
    # since the revision of the first read
    e.put("key0999", b1.url + "/late")
    assert wait_for(lambda: target(999) == ("b1", "/late/r999"), 3), gw.logs()
    assert "reading the values changed since" in gw.stderr(), gw.logs()
    assert target(998) == ("b1", "/k998/r998")
    # a deletion seen through the filter is read again without it, then followed
    e.delete("key0500")
    assert wait_for(lambda: target(500) == ("default", "/d500/r500"), 3), gw.logs()
    assert target(501) == ("b1", "/k501/r501")
    # nothing changes: each poll is one empty txn asking for the store revision
    time.sleep(0.6)
    px.reset()
    time.sleep(1.2)
    assert 2 <= px.count("/kv/txn") <= 4 and px.count("/kv/range") == 0, px.counts
    # any write moves the revision: the probe, then 8 txns of at most 128 keys,
    # never a request per key
    px.reset()
    e.put("unrelated", "x")
    assert wait_for(lambda: px.count("/kv/txn") >= 9, 3), px.counts
    assert px.count("/kv/range") == 0, px.counts


def test_another_cluster_at_the_same_revision(workdir, etcd, backend, gateway, tcp_proxy):
    """etcd wiped and made again counts revisions from 1 again: an unchanged
    revision from another cluster must not pass for unchanged keys."""
    e1 = etcd(auth=False)
    e2 = etcd(auth=False, extra_args=["--initial-cluster-token", "another-cluster"])
    b0, b1, b2 = backend("default"), backend("b1"), backend("b2")
    e1.put("petstore", b1.url)
    e2.put("petstore", b2.url)
    rev = lambda e: e.kv("/v3/kv/range", {"key": "cGV0c3RvcmU="})["header"]["revision"]
    assert rev(e1) == rev(e2)
    px = tcp_proxy(e1.port)
    gw = gateway([api("petstore", b0.url)], args=etcd_args(e1, user=None, timer=1000, url=px.url))
    assert wait_for(lambda: who(gw) == "b1", 3), gw.logs()
    # right after a poll, so that no poll is cut (a failed poll reads everything anyway)
    px.reset()
    assert wait_for(lambda: px.count("/kv/txn") >= 1, 3), px.counts
    time.sleep(0.1)
    px.retarget(e2.port)
    assert wait_for(lambda: who(gw) == "b2", 3), gw.logs()
    assert not [ln for ln in etcd_lines(gw) if "unreachable" in ln], gw.logs()


def test_store_wiped_between_polls_is_read_again(workdir, etcd, backend, gateway, tcp_proxy):
    """etcd wiped and started again between two polls keeps its cluster id and
    counts revisions from 1 again: a lower revision must lead to a full read,
    not to 'what changed since' a revision that store never had."""
    import shutil
    e = etcd(auth=False)
    b0, b1, b2 = backend("default"), backend("b1"), backend("b2")
    e.put("petstore", b1.url)
    for i in range(30):
        e.put("other", str(i))
    px = tcp_proxy(e.port)
    gw = gateway([api("petstore", b0.url)],
                 args=etcd_args(e, user=None, timer=4000, url=px.url) + ["-v"])
    assert wait_for(lambda: who(gw) == "b1", 5), gw.logs()
    # right after a poll, so that the wipe falls between two polls: a poll
    # that failed while etcd was down would read everything anyway
    px.reset()
    assert wait_for(lambda: px.count("/kv/txn") >= 1, 6), px.counts
    time.sleep(0.2)
    e.stop()
    shutil.rmtree(e.data)
    e.start()
    e.put("petstore", b2.url)
    assert wait_for(lambda: who(gw) == "b2", 6), gw.logs()
    polls = [ln for ln in etcd_lines(gw) if re.search(r"poll \d+ (done|failed)", ln)]
    assert polls and not [ln for ln in polls if "failed" in ln], gw.logs()
    assert re.search(r"store revision 3\d -> \d; reading every key", gw.stderr()), gw.logs()
