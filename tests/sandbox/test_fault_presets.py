"""Fault presets (off, light, heavy), the faults that happen after the write (held answers,
dropped connections), gateway errors, the Retry-After range, and duplicates_created."""
import collections

import httpx
import pytest
import yaml

from cfa_opco.sandbox.config import load_config
from cfa_opco.sandbox.faults import PRESETS
from cfa_opco.sandbox.testing import run_sandbox

from _sandbox_helpers import Api

SHARES = ("error_503", "error_429", "error_502", "error_504", "drop", "hang", "lost_response", "held")


@pytest.fixture(scope="module")
def fp():
    with run_sandbox(instant=True, rate_limit=0) as s, httpx.Client(trust_env=False, timeout=10) as http:
        yield s, http


@pytest.fixture(autouse=True)
def _clean(fp):
    fp[0].clear_faults()
    yield
    fp[0].clear_faults()
    fp[0].patch_settings(opcos={"ocapiat": {"idempotency": True}})


def test_light_preset_rates(fp):
    s, http = fp
    a = Api(s, http, "atlas")
    s.set_fault_preset("light", seed=11)
    codes = collections.Counter(a.get("/v1/status").status_code for _ in range(400))
    assert 6 <= codes[503] <= 50 and 5 <= codes[429] <= 40, codes      # 5 % + ~1 % lost (503), 5 %
    assert set(codes) == {200, 429, 503}


def test_heavy_preset_rates(fp):
    """~15 % 503, ~15 % 429 (Retry-After 1 or 2), ~3 % held after processing, ~2 % dropped
    after processing, over 400 requests (loose bounds; the draw is seeded)."""
    s, http = fp
    a = Api(s, http, "atlas")
    before = s.stats("atlas")["faults_injected"]
    cfg = s.set_fault_preset("heavy", held_seconds=0.2, seed=7)
    assert cfg["preset"] == "heavy" and cfg["held_seconds"] == 0.2 and cfg["lost_response_mode"] == "drop"
    n = 400
    seen: collections.Counter = collections.Counter()
    retry_after: dict[int, set] = {503: set(), 429: set()}
    for _ in range(n):
        try:
            r = a.get("/v1/status")
        except (httpx.RemoteProtocolError, httpx.ReadError):
            seen["dropped"] += 1
            continue
        seen[r.status_code] += 1
        if r.status_code in retry_after:
            retry_after[r.status_code].add(r.headers["retry-after"])
    after = s.stats("atlas")["faults_injected"]
    injected = {k: after.get(k, 0) - before.get(k, 0) for k in SHARES}
    assert 0.08 * n <= seen[503] <= 0.22 * n, seen
    assert 0.08 * n <= seen[429] <= 0.22 * n, seen
    assert 1 <= injected["held"] <= 0.08 * n, injected
    assert 1 <= seen["dropped"] <= 0.06 * n, seen
    assert injected["lost_response"] == seen["dropped"]
    assert seen[200] == n - seen[503] - seen[429] - seen["dropped"]      # held answers do arrive (200)
    assert retry_after[429] == {"1", "2"} and retry_after[503] <= {"1", "2"}
    assert injected["error_502"] == injected["error_504"] == injected["hang"] == injected["drop"] == 0


def test_presets_are_complete_mixes():
    assert set(PRESETS) == {"off", "light", "heavy"}
    for p in PRESETS.values():
        assert set(SHARES) <= set(p)         # switching preset leaves no share of the previous one
    assert all(PRESETS["off"][k] == 0 for k in SHARES)
    h = PRESETS["heavy"]
    assert (h["error_503"], h["error_429"], h["held"], h["lost_response"]) == (0.15, 0.15, 0.03, 0.02)
    assert (h["retry_after_min"], h["retry_after_max"], h["held_seconds"], h["lost_response_mode"]) == \
        (1, 2, 35.0, "drop")


def test_held_answer_comes_after_the_write(fp):
    s, http = fp
    a = Api(s, http, "atlas")
    s.set_fault_preset("off", held=1.0, held_seconds=20, methods=["POST"])
    p = a.dossier()
    with pytest.raises(httpx.ReadTimeout):
        http.post(a.base + "/v1/dossiers", headers=a.headers, json=p, timeout=1.0)
    # the answer is still held by the server, and the dossier already exists
    assert s.creations("atlas")["creations"][p["numeroInterne"]] == 1
    assert s.stats("atlas")["held_responses_by_real_status"].get("201", 0) >= 1
    s.clear_faults()
    r = a.post("/v1/dossiers", json=p)                    # a client's retry finds it
    assert r.status_code == 200 and r.json()["numeroInterne"] == p["numeroInterne"]
    assert s.creations("atlas")["creations"][p["numeroInterne"]] == 1
    assert s.duplicates_created("atlas") == 0


def test_held_answer_is_the_real_answer(fp):
    s, http = fp
    a = Api(s, http, "atlas")
    s.set_fault_preset("off", held=1.0, held_seconds=0.3, methods=["POST"])
    p = a.dossier()
    r = a.post("/v1/dossiers", json=p)
    assert r.status_code == 201 and r.json()["numeroInterne"] == p["numeroInterne"]


def test_heavy_dropped_connection_after_the_write(fp):
    s, http = fp
    a = Api(s, http, "atlas")
    s.set_fault_preset("heavy", error_503=0, error_429=0, held=0, lost_response=1.0, methods=["POST"])
    p = a.dossier()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        a.post("/v1/dossiers", json=p)
    s.clear_faults()
    assert s.creations("atlas")["creations"][p["numeroInterne"]] == 1
    assert s.stats("atlas")["lost_responses_by_real_status"].get("201", 0) >= 1


@pytest.mark.parametrize("status,code", [(502, "PASSERELLE_EN_ERREUR"), (504, "PASSERELLE_DELAI_DEPASSE")])
def test_gateway_errors_not_processed(fp, status, code):
    s, http = fp
    a = Api(s, http, "atlas")
    s.set_faults(**{f"error_{status}": 1.0})
    p = a.dossier()
    r = a.post("/v1/dossiers", json=p)
    assert r.status_code == status and r.json()["erreurs"][0]["code"] == code
    assert "retry-after" not in r.headers
    assert p["numeroInterne"] not in s.creations("atlas")["creations"]


def test_retry_after_range(fp):
    s, http = fp
    a = Api(s, http, "atlas")
    s.set_faults(error_429=1.0, retry_after_min=1, retry_after_max=3)
    assert {a.get("/v1/status").headers["retry-after"] for _ in range(60)} == {"1", "2", "3"}
    s.set_faults(error_503=1.0, retry_after_min=0.5, retry_after_max=1.5)
    vals = [float(a.get("/v1/status").headers["retry-after"]) for _ in range(30)]
    assert all(0.5 <= v <= 1.5 for v in vals) and len(set(vals)) > 5
    s.set_faults(error_503=1.0)                              # default: 1 s, as before
    assert a.get("/v1/status").headers["retry-after"] == "1"


def test_preset_runtime_switch_patch_and_errors(fp):
    s, http = fp
    cfg = s.set_fault_preset("heavy", methods=["POST"])
    assert cfg["methods"] == ["POST"] and cfg["error_429"] == 0.15
    cfg = s.set_fault_preset("light")
    assert cfg["preset"] == "light" and cfg["held"] == 0 and cfg["lost_response_mode"] == "503"
    assert cfg["error_503"] == 0.05 and cfg["methods"] == ["ALL"]     # PUT: filters back to defaults
    r = http.patch(s.base_url + "/_sandbox/faults", json={"error_503": 0.5})
    assert r.json()["preset"] is None and r.json()["error_429"] == 0.05   # no longer the named mix
    r = http.patch(s.base_url + "/_sandbox/faults", json={"preset": "heavy", "routes": ["dossiers_v1"]})
    assert r.json()["preset"] == "heavy" and r.json()["error_503"] == 0.15 and r.json()["routes"] == ["dossiers_v1"]
    cfg = s.set_fault_preset("off")
    assert all(cfg[k] == 0 for k in SHARES)
    r = http.put(s.base_url + "/_sandbox/faults", json={"preset": "enorme"})
    assert r.status_code == 400 and r.json()["erreurs"][0]["code"] == "PRESET_INCONNU"
    assert "préréglage de fautes inconnu : 'enorme'" in r.json()["erreurs"][0]["message"]


def test_preset_from_config_and_cli(tmp_path):
    c = load_config(None, {"faults": {"preset": "heavy", "error_503": 0.5}})
    assert c["faults"]["error_503"] == 0.5 and c["faults"]["error_429"] == 0.15 and c["faults"]["held"] == 0.03
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"faults": {"preset": "light", "held": 0.1, "methods": ["POST"]}}))
    c = load_config(f)
    assert c["faults"]["preset"] == "light" and c["faults"]["held"] == 0.1 and c["faults"]["error_503"] == 0.05
    assert c["faults"]["methods"] == ["POST"]
    with pytest.raises(ValueError, match="préréglage de fautes inconnu"):
        load_config(None, {"faults": {"preset": "moyen"}})
    with run_sandbox(instant=True, rate_limit=0,
                     args=["--fault-preset", "heavy", "--fault-held-seconds", "2", "--fault-retry-after", "1-3"]) as s:
        got = s.settings()["faults"]
        assert got["preset"] == "heavy" and got["error_503"] == 0.15 and got["held_seconds"] == 2
        assert (got["retry_after_min"], got["retry_after_max"]) == (1, 3)


def test_duplicates_created(fp):
    """An OPCO that does not dedupe + a client that re-sends blindly after a lost answer:
    the second dossier is counted as an exactly-once violation."""
    s, http = fp
    a = Api(s, http, "ocapiat")
    k = Api(s, http, "atlas")
    base_all, base_atlas = s.duplicates_created(), s.duplicates_created("atlas")
    p = k.dossier()
    assert k.post("/v1/dossiers", json=p).status_code == 201
    assert k.post("/v1/dossiers", json=p).status_code == 200      # deduplicated: not a duplicate
    assert s.duplicates_created("atlas") == base_atlas
    s.patch_settings(opcos={"ocapiat": {"idempotency": False}})
    s.set_faults(lost_response=1.0, lost_response_mode="drop", methods=["POST"], opcos=["ocapiat"])
    p = a.dossier()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        a.post("/v1/dossiers", json=p)
    s.clear_faults()
    assert a.post("/v1/dossiers", json=p).status_code == 201      # the blind re-send
    assert s.duplicates_created("ocapiat") == 1
    assert s.duplicates_created() == base_all + 1
    assert s.stats("ocapiat")["duplicates_created"] == 1
    assert s.creations("ocapiat")["duplicates"] == [p["numeroInterne"]]
    a.post("/v1/dossiers", json=p)
    assert s.duplicates_created("ocapiat") == 2                    # a third copy: two violations
    s.reset(keep_settings=True)
    assert s.duplicates_created() == 0
