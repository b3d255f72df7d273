"""A restart (graceful or a crash) loses nothing."""
import json

import httpx

from cfa_opco.sandbox.testing import run_sandbox

from _sandbox_helpers import Api


def test_restart_keeps_everything(tmp_path):
    db = tmp_path / "persist.db"
    with run_sandbox(db=db, rate_limit=0, overrides={"delays": {"instruction": 5, "decision": 10, "reglement": 30}}) as s, \
            httpx.Client(trust_env=False, timeout=10) as http:
        a = Api(s, http, "akto")
        p, out = a.create(version="v2")
        objets = json.dumps([{"typeObjet": "DOSSIER", "idObjet": p["numeroInterne"]}])
        r = a.post("/v1/documents", data={"typeFichier": "CONVENTION_FORMATION", "objets": objets},
                   files={"fichier": ("c.pdf", b"%PDF", "application/pdf")})
        assert r.status_code == 201
        s.advance_clock(20)
        d = a.read(p["numeroInterne"])
        assert d["etat"] == "ENGAGE"
        f = {"numeroInterneFacture": "F-P-1", "referenceFactureCFA": "R1", "numeroInterneDossier": p["numeroInterne"],
             "echeance": {"numero": 1}, "montant": d["echeances"][0]["montant"], "dateFacture": "2026-09-10"}
        assert a.post("/v1/factures", json=f).status_code == 201
        stats_before = s.stats("akto")
        clock_before = s.clock()["offset_seconds"]
        s.restart()
        # same token still valid (tokens are persisted), same clock, same data
        assert s.clock()["offset_seconds"] == clock_before
        d2 = a.read(p["numeroInterne"])
        assert d2["etat"] == "ENGAGE" and d2["numeroDeca"] == out["numeroDeca"]
        assert d2["historique"] == d["historique"]
        r = a.get("/v2/factures/etats", params={"numeroInterneFacture": "F-P-1"})
        assert r.json()["factures"][0]["etatFacture"] == "EN_COURS"
        s.advance_clock(30)
        r = a.get("/v2/factures/etats", params={"numeroInterneFacture": "F-P-1"})
        assert r.json()["factures"][0]["etatFacture"] == "REGLE"
        st = s.stats("akto")
        assert st["dossiers_created"] == stats_before["dossiers_created"] == 1
        for code, n in stats_before["requests_by_status"].items():
            assert st["requests_by_status"][code] >= n
        assert a.post("/v2/dossiers", json=p).status_code == 200      # idempotency survives
        # numbering continues without reuse
        p3, out3 = a.create(version="v2")
        assert out3["numeroExterne"] != out["numeroExterne"]
        # a crash (SIGKILL) loses no committed dossier
        s.kill()
        s.start()
        assert a.read(p3["numeroInterne"])["numeroDeca"] == out3["numeroDeca"]
        assert s.creations("akto")["total"] == 2
