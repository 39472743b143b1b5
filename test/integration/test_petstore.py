"""The sample petstore backend (samples/petstore-backend.c), directly and through the
gateway with the sample API document."""

import json
import os

import pytest

from harness import BACKEND_BIN, ROOT, request, to_yaml

pytestmark = pytest.mark.skipif(not os.path.exists(BACKEND_BIN),
                                reason="petstore-backend not built")


def test_backend_direct(petstore):
    p = petstore()
    r = request(p.port, "GET", "/v2/pet/findByStatus?status=available")
    assert r.status == 200, r
    assert r.header("Content-Type") == "application/json"
    assert r.header("Content-Length") == str(len(r.body))
    pets = r.json()
    assert pets and all(x["status"] == "available" for x in pets)
    r = request(p.port, "GET", "/v2/pet/findByStatus?status=sold,pending")
    assert {x["status"] for x in r.json()} == {"sold", "pending"}
    r = request(p.port, "GET", "/v2/pet/findByStatus")
    assert r.status == 400 and r.json()["type"] == "error"
    r = request(p.port, "GET", "/v2/pet/1")
    assert r.status == 200 and r.json()["id"] == 1
    r = request(p.port, "GET", "/v2/pet/999")
    assert r.status == 404
    assert r.json() == {"code": 1, "type": "error", "message": "Pet not found"}
    r = request(p.port, "POST", "/v2/pet", body=b'{"name":"rex","status":"available"}',
                headers=[("Content-Type", "application/json")])
    assert r.status == 200
    j = r.json()
    assert j["name"] == "rex" and isinstance(j["id"], int)
    r = request(p.port, "POST", "/v2/pet", body=b'{"id":77,"name":"x"}')
    assert r.json() == {"id": 77, "name": "x"}
    for bad in (b"", b"not json", b"[1,2]", b'{"a":}'):
        r = request(p.port, "POST", "/v2/pet", body=bad)
        assert r.status == 400, (bad, r)
    r = request(p.port, "GET", "/v2/health")
    assert r.status == 200 and r.json()["status"] == "UP"
    r = request(p.port, "HEAD", "/v2/pet/1")
    assert r.status == 200 and r.body == b""


def test_backend_logs_unless_quiet(petstore):
    p = petstore(quiet=False)
    request(p.port, "GET", "/v2/pet/2")
    p.stop()
    assert '"GET /v2/pet/2" 200' in p.stderr()
    assert p.returncode == 0


def test_backend_sigterm(petstore):
    p = petstore()
    assert p.stop() == 0


def sample_api_for(port):
    with open(os.path.join(ROOT, "samples", "petstore.yaml")) as f:
        text = f.read()
    assert "http://127.0.0.1:8081/v2" in text
    return text.replace("http://127.0.0.1:8081/v2", "http://127.0.0.1:%d/v2" % port)


def test_sample_api_through_gateway(gateway, petstore):
    p = petstore()
    g = gateway([sample_api_for(p.port)])
    r = g.request("GET", "/petstore/v1/pet/findByStatus?status=available")
    assert r.status == 200, r
    assert all(x["status"] == "available" for x in r.json())
    r = g.request("GET", "/petstore/v1/pet/1")
    assert r.status == 200 and r.json()["id"] == 1, r
    r = g.request("GET", "/petstore/v1/pet/12345")
    assert r.status == 404, r
    assert r.json()["message"] == "Pet not found"
    r = g.request("POST", "/petstore/v1/pet", body=b'{"name":"gw"}',
                  headers=[("Content-Type", "application/json")])
    assert r.status == 200 and r.json()["name"] == "gw", r
    r = g.request("DELETE", "/petstore/v1/pet/1")
    assert r.status == 405, r
    r = g.request("GET", "/petstore/v1/store")
    assert r.status == 404, r
