"""Routing: base paths on whole segments, templates, literal beats template, 404, 405 +
Allow, dot segments, %2e, %2F kept, climbing above the base, %00, URL joins, endpoint
levels (API / path / operation)."""

import pytest

from harness import fault, openapi


def op(url):
    return {"x-wso2-production-endpoints": {"urls": [url]}}


@pytest.fixture
def gw(gateway, backend):
    b = backend("b1")
    u = b.url
    doc = openapi("/rt/v1", {
        # template declared before the literal on purpose
        "/pets/{id}": {"get": op(u + "/tmpl"), "delete": op(u + "/tmpl")},
        "/pets/mine": {"get": op(u + "/literal")},
        "/pets": {"get": None, "post": None},
        "/items/{a}/sub/{b}": {"get": None},
        "/files/{name}": {"get": None},
    }, endpoints=[u + "/api"])
    other = openapi("/rt", {"/v1x/thing": {"get": None}, "/other": {"get": None}},
                    endpoints=[u + "/short"], title="short")
    g = gateway([doc, other])
    g.backend = b
    return g


def target_of(r):
    assert r.status == 200, r
    return r.echo()["target"]


def test_basic_route(gw):
    assert target_of(gw.request("GET", "/rt/v1/pets")) == "/api/pets"
    assert target_of(gw.request("POST", "/rt/v1/pets", body=b"{}")) == "/api/pets"


def test_template_matches_one_segment(gw):
    assert target_of(gw.request("GET", "/rt/v1/pets/42")) == "/tmpl/pets/42"
    assert target_of(gw.request("GET", "/rt/v1/items/x/sub/y?q=1")) == "/api/items/x/sub/y?q=1"


def test_template_does_not_match_two_segments(gw):
    r = gw.request("GET", "/rt/v1/pets/42/extra")
    assert r.status == 404, r


def test_template_does_not_match_empty_segment(gw):
    r = gw.request("GET", "/rt/v1/items//sub/y")
    assert r.status == 404, r


def test_literal_beats_template(gw):
    assert target_of(gw.request("GET", "/rt/v1/pets/mine")) == "/literal/pets/mine"
    # the template still takes the method the literal does not declare
    r = gw.request("DELETE", "/rt/v1/pets/mine")
    assert r.status in (200, 405), r
    if r.status == 200:
        assert r.echo()["target"] == "/tmpl/pets/mine"


def test_base_path_whole_segments(gw):
    # /rt/v1x/thing belongs to the /rt API (resource /v1x/thing), not to /rt/v1
    assert target_of(gw.request("GET", "/rt/v1x/thing")) == "/short/v1x/thing"
    r = gw.request("GET", "/rt/v1xpets")
    assert r.status == 404, r


def test_longest_base_path_wins(gw):
    assert target_of(gw.request("GET", "/rt/other")) == "/short/other"
    assert target_of(gw.request("GET", "/rt/v1/pets")) == "/api/pets"


def test_404_fault(gw):
    for path in ("/nothing/here", "/rt/v1/nope", "/rt/v1", "/"):
        r = gw.request("GET", path)
        assert r.status == 404, (path, r)
        code, msg, desc = fault(r)
        assert isinstance(code, int) and code != 0, r
        assert r.header("Content-Type", "").startswith("application/json"), r
    assert all(not q["target"].startswith("/nothing") for q in gw.backend.requests())


def test_405_with_allow(gw):
    r = gw.request("PUT", "/rt/v1/pets", body=b"{}")
    assert r.status == 405, r
    allow = {m.strip().upper() for m in (r.header("Allow") or "").split(",") if m.strip()}
    assert {"GET", "POST"} <= allow, r.headers
    assert "PUT" not in allow and "DELETE" not in allow
    code, msg, desc = fault(r)
    assert isinstance(code, int)
    assert gw.backend.stats()["requests"] == 0


def test_head_allowed_where_get_declared(gw):
    with gw.conn() as c:
        r = c.request("HEAD", "/rt/v1/pets")
    assert r.status == 200, r
    assert r.body == b""
    assert gw.backend.requests()[-1]["method"] == "HEAD"


def test_dot_segments_resolved(gw):
    assert target_of(gw.request("GET", "/rt/v1/pets/x/../mine")) == "/literal/pets/mine"
    assert target_of(gw.request("GET", "/rt/v1/./pets/./7")) == "/tmpl/pets/7"
    assert target_of(gw.request("GET", "/rt/v1/items/a/../b/sub/c")) == "/api/items/b/sub/c"


def test_encoded_dot_segments_resolved(gw):
    assert target_of(gw.request("GET", "/rt/v1/pets/x/%2e%2e/mine")) == "/literal/pets/mine"
    assert target_of(gw.request("GET", "/rt/v1/pets/x/%2E%2E/mine")) == "/literal/pets/mine"
    assert target_of(gw.request("GET", "/rt/v1/%2e/pets/8")) == "/tmpl/pets/8"


def test_climb_above_root_is_400(gw):
    for path in ("/rt/v1/../../../etc/passwd", "/rt/v1/%2e%2e/%2e%2e/%2e%2e/x", "/../rt/v1/pets",
                 "/rt/v1/pets/1/../../../../../x"):
        r = gw.request("GET", path)
        assert r.status == 400, (path, r)
        fault(r)
    assert gw.backend.stats()["requests"] == 0, gw.backend.requests()


def test_climb_above_base_is_400(gw):
    """DESIGN: 'a path that would climb above the base path ... is rejected with 400'."""
    for path in ("/rt/v1/pets/../../x", "/rt/v1/pets/%2e%2e/%2E%2E/x", "/rt/v1/../nothing"):
        r = gw.request("GET", path)
        assert r.status == 400, (path, r)
        fault(r)
    assert gw.backend.stats()["requests"] == 0, gw.backend.requests()


def test_nul_is_400(gw):
    r = gw.request("GET", "/rt/v1/pets/a%00b")
    assert r.status == 400, r
    fault(r)
    assert gw.backend.stats()["requests"] == 0


def test_encoded_slash_kept_and_not_a_separator(gw):
    # a%2Fb is one segment: matches /files/{name}, and reaches the backend still encoded
    assert target_of(gw.request("GET", "/rt/v1/files/a%2Fb")) == "/api/files/a%2Fb"
    assert target_of(gw.request("GET", "/rt/v1/pets/a%2fb")) == "/tmpl/pets/a%2fb"
    # ..%2F is not a dot segment
    r = gw.request("GET", "/rt/v1/files/..%2Fetc")
    assert r.status in (200, 400), r
    if r.status == 200:
        assert r.echo()["target"] == "/api/files/..%2Fetc"


def test_percent_encoded_segment_passthrough(gw):
    assert target_of(gw.request("GET", "/rt/v1/files/h%C3%A9llo%20w")) == "/api/files/h%C3%A9llo%20w"


def test_double_slash_target_not_an_authority(gw):
    """evhttp parses '//admin/x' as an authority: the gateway must not route on it."""
    r = gw.request("GET", "//rt/v1/pets")
    assert r.status in (200, 400, 404), r
    if r.status == 200:
        assert r.echo()["hmap"]["host"] == ["127.0.0.1:%d" % gw.backend.port]


@pytest.mark.parametrize("ep_path,expect", [
    ("/base/", "/base/pets/1"),
    ("/base", "/base/pets/1"),
    ("", "/pets/1"),
    ("/", "/pets/1"),
])
def test_url_join(gateway, backend, ep_path, expect):
    b = backend("j")
    doc = openapi("/join", {"/pets/{id}": {"get": None}}, endpoints=[b.url + ep_path])
    g = gateway([doc])
    r = g.request("GET", "/join/pets/1?x=y")
    assert r.status == 200, r
    assert r.echo()["target"] == expect + "?x=y"


def test_join_base_path_itself(gateway, backend):
    b = backend("j")
    doc = openapi("/join", {"/": {"get": None}}, endpoints=[b.url + "/svc"])
    g = gateway([doc])
    r = g.request("GET", "/join/")
    assert r.status == 200, r
    assert r.echo()["target"] in ("/svc/", "/svc")


def test_endpoint_levels(gateway, backend):
    b = backend("lv")
    u = b.url
    doc = openapi("/lv", {
        "/a": {"get": None},
        "/p": {"x-wso2-production-endpoints": {"urls": [u + "/path"]}, "get": None},
        "/o": {"x-wso2-production-endpoints": {"urls": [u + "/path"]},
               "get": op(u + "/op"), "post": None},
    }, endpoints=[u + "/api"])
    g = gateway([doc])
    assert target_of(g.request("GET", "/lv/a")) == "/api/a"
    assert target_of(g.request("GET", "/lv/p")) == "/path/p"
    assert target_of(g.request("GET", "/lv/o")) == "/op/o"
    assert target_of(g.request("POST", "/lv/o", body=b"x")) == "/path/o"


def test_named_endpoint_reference(gateway, backend):
    b = backend("named")
    doc = openapi("/named", {
        "/x": {"get": {"x-wso2-production-endpoints": "#/x-wso2-endpoints/myEp"}},
    }, extra={"x-wso2-endpoints": [{"myEp": {"urls": [b.url + "/ref"]}}]})
    g = gateway([doc])
    assert target_of(g.request("GET", "/named/x")) == "/ref/x"
