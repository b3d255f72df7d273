"""Bulk seeding (route and offline function) and paging through 100,000 dossiers."""
import time

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.fr import siret as stdnum_siret

from cfa_opco.sandbox import seed_dossiers
from cfa_opco.sandbox.testing import run_sandbox
from cfa_opco.sandbox.validation import valid_siret

from _sandbox_helpers import Api


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789", min_size=14, max_size=14),
                 st.text(alphabet="0123456789", min_size=5, max_size=5).map(lambda n: "356000000" + n)))
def test_siret_check_matches_stdnum(value):
    assert valid_siret(value) == stdnum_siret.is_valid(value)


def test_seed_100k_and_page_through(tmp_path):
    with run_sandbox(db=tmp_path / "big.db", rate_limit=0) as s, httpx.Client(trust_env=False, timeout=60) as http:
        t = time.monotonic()
        out = s.seed("atlas", "324578137", 100_000, prefix="BIG", spread_seconds=86400)
        assert out["count"] == 100_000 and time.monotonic() - t < 30
        a = Api(s, http, "atlas", "324578137")
        seen = set()
        last = None
        total = None
        for page in range(1, 101):
            r = a.get("/v2/dossiers/etats", params={"numeroPage": page, "taillePage": 1000})
            body = r.json()
            total = body["total"]
            for x in body["EtatDossierResult"]:
                k = (x["dateEtat"], x["numeroInterne"])
                assert last is None or k >= last
                last = k
                seen.add(x["numeroInterne"])
        assert total == 100_000 and len(seen) == 100_000
        counts = {}
        r = a.get("/v2/dossiers/etats", params={"numeroPage": 101, "taillePage": 1000})
        assert r.json()["EtatDossierResult"] == []
        # outcomes cycle 7 ENGAGE / 1 REFUSE / 2 incomplete
        r = a.get("/v1/dossiers/liste", params={"numerosInternes": ",".join(out["first"][:4] + f"{i:09d}"
                                                                         for i in range(1, 11))})
        for d in r.json()["dossiers"]:
            counts[d["etat"]] = counts.get(d["etat"], 0) + 1
        assert counts == {"ENGAGE": 7, "REFUSE": 1, "EN_COURS_INSTRUCTION": 2}
        assert s.stats("atlas")["dossiers_seeded"] == 100_000


def test_offline_seed_function(tmp_path):
    db = tmp_path / "off.db"
    out = seed_dossiers(db, "akto", "775672272", 500, prefix="OFF")
    assert out["count"] == 500
    with run_sandbox(db=db, rate_limit=0) as s, httpx.Client(trust_env=False, timeout=20) as http:
        a = Api(s, http, "akto")
        d = a.read("OFF-000000001")
        assert d["etat"] == "ENGAGE" and d["engagement"]["montantTotal"] > 0
        assert s.creations("akto")["total"] == 500
        # new dossiers continue the numbering
        p, o = a.create(version="v2")
        assert o["numeroExterne"] == "AKTO-000000501"
