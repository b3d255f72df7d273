"""Fault injection (each kind, per route kind, seeded, runtime toggles) and the rate limit."""
import time

import httpx
import pytest

from cfa_opco.sandbox.testing import run_sandbox

from _sandbox_helpers import Api


@pytest.fixture(scope="module")
def fs():
    with run_sandbox(instant=True, rate_limit=0) as s, httpx.Client(trust_env=False, timeout=10) as http:
        yield s, http
        s.clear_faults()


@pytest.fixture(autouse=True)
def _clean(fs):
    fs[0].clear_faults()
    yield
    fs[0].clear_faults()
    fs[0].set_rate_limit(0)


def test_503_only_on_posts(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_faults(error_503=1.0, methods=["POST"])
    before = s.creations("atlas")["total"]
    r = a.post("/v1/dossiers", json=a.dossier())
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["erreurs"]
    assert a.get("/v1/status").status_code == 200
    assert s.creations("atlas")["total"] == before
    assert s.stats("atlas")["faults_injected"]["error_503"] >= 1


def test_429_injected_and_route_filter(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_faults(error_429=1.0, routes=["etats_v2"])
    r = a.get("/v2/dossiers/etats")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert a.get("/v1/status").status_code == 200


def test_latency(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_faults(latency_ms=300)
    t = time.monotonic()
    assert a.get("/v1/status").status_code == 200
    assert time.monotonic() - t >= 0.29


def test_hang_past_client_timeout(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_faults(hang=1.0, hang_seconds=2)
    p = a.dossier()
    with pytest.raises(httpx.ReadTimeout):
        http.post(a.base + "/v1/dossiers", headers=a.headers, json=p, timeout=0.5)
    s.clear_faults()
    assert p["numeroInterne"] not in s.creations("atlas")["creations"]  # not processed


def test_drop_connection(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_faults(drop=1.0)
    p = a.dossier()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        a.post("/v1/dossiers", json=p)
    s.clear_faults()
    assert p["numeroInterne"] not in s.creations("atlas")["creations"]
    assert a.get("/v1/status").status_code == 200   # the server is fine


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_lost_response_is_processed(fs, mode):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_faults(lost_response=1.0, lost_response_mode=mode, methods=["POST"])
    p = a.dossier()
    if mode == "503":
        assert a.post("/v1/dossiers", json=p).status_code == 503
    else:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            a.post("/v1/dossiers", json=p)
    s.clear_faults()
    c = s.creations("atlas")
    assert c["creations"][p["numeroInterne"]] == 1     # it WAS created
    r = a.post("/v1/dossiers", json=p)                 # a client's retry finds it
    assert r.status_code == 200
    assert s.creations("atlas")["creations"][p["numeroInterne"]] == 1
    assert s.stats("atlas")["lost_responses_by_real_status"].get("201", 0) >= 1


def test_without_idempotency_duplicates_show(fs):
    """A non-deduplicating OPCO: a blind retry creates twice, and /_sandbox/creations says so."""
    s, http = fs
    a = Api(s, http, "ocapiat")
    s.patch_settings(opcos={"ocapiat": {"idempotency": False}})
    try:
        p = a.dossier()
        assert a.post("/v1/dossiers", json=p).status_code == 201
        assert a.post("/v1/dossiers", json=p).status_code == 201
        c = s.creations("ocapiat")
        assert c["creations"][p["numeroInterne"]] == 2 and p["numeroInterne"] in c["duplicates"]
    finally:
        s.patch_settings(opcos={"ocapiat": {"idempotency": True}})


def test_seeded_reproducible(fs):
    s, http = fs
    a = Api(s, http, "atlas")

    def run():
        s.set_faults(seed=42, error_503=0.3, error_429=0.2)
        return [a.get("/v1/status").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second and {200, 503, 429} <= set(first)


def test_rate_limit_429_retry_after(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_rate_limit(5)
    codes = [a.get("/v1/status") for _ in range(12)]
    refused = [r for r in codes if r.status_code == 429]
    assert refused and sum(r.status_code == 200 for r in codes) >= 5
    r = refused[0]
    assert int(r.headers["retry-after"]) >= 1 and r.json()["erreurs"][0]["code"] == "TROP_DE_REQUETES"
    # per key: another key of the same OPCO is not affected
    b = Api(s, http, "atlas", "324578137")
    assert b.get("/v1/status").status_code == 200
    # decimal Retry-After
    s.patch_settings(rate_limit={"per_second": 5, "retry_after": "decimal"})
    rs = [a.get("/v1/status") for _ in range(12)]
    ra = [float(r.headers["retry-after"]) for r in rs if r.status_code == 429]
    assert ra and all(0 < x <= 1.0 for x in ra)
    s.patch_settings(rate_limit={"per_second": 0, "retry_after": "integer"})


def test_rate_limit_exact_pacing_is_never_refused(fs):
    s, http = fs
    a = Api(s, http, "atlas")
    s.set_rate_limit(20)
    time.sleep(0.2)
    start = time.monotonic()
    codes = []
    for i in range(50):   # 50 requests at exactly 20/s, after an initial burst of 20
        delay = start + i * 0.05 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        codes.append(a.get("/v1/status").status_code)
    assert codes.count(429) == 0, codes


def test_cli_fault_flags():
    with run_sandbox(instant=True, rate_limit=0, args=["--fault-503", "1.0", "--fault-methods", "POST",
                                                      "--fault-seed", "3"]) as s, \
            httpx.Client(trust_env=False, timeout=10) as http:
        a = Api(s, http, "atlas")
        assert a.post("/v1/dossiers", json=a.dossier()).status_code == 503
        assert a.get("/v1/status").status_code == 200
        assert s.settings()["faults"]["error_503"] == 1.0
