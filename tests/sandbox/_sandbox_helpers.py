"""Helpers shared by the sandbox tests (imported by name: tests/sandbox is on sys.path)."""
import itertools
import os

from cfa_opco.sandbox import sample_dossier
from cfa_opco.sandbox.testing import demo_headers

from tests.helpers import SIREN  # noqa: F401  (re-exported to the sandbox tests)

_counter = itertools.count(1)


def uid(prefix: str = "T") -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter):06d}"
class Api:
    """Tiny client for one OPCO of a sandbox (demo keys; AKTO token fetched on demand)."""

    def __init__(self, server, http, opco, siren=SIREN, key=None):
        self.server, self.http, self.opco, self.siren = server, http, opco, siren
        self.base = server.api(opco)
        self.headers = demo_headers(opco, siren, key=key)
        if server and opco == "akto":
            self.headers["Authorization"] = "Bearer " + self.token()

    def token(self):
        r = self.http.post(self.server.token_url("akto"), data={
            "grant_type": "client_credentials", "client_id": "cfa-opco-connector",
            "client_secret": "demo-akto-secret"})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def get(self, path, **kw):
        return self.http.get(self.base + path, headers=kw.pop("headers", self.headers), **kw)

    def post(self, path, **kw):
        return self.http.post(self.base + path, headers=kw.pop("headers", self.headers), **kw)

    def dossier(self, ni=None, **changes):
        return sample_dossier(self.opco, self.siren, ni or uid(self.opco.upper()), **changes)

    def create(self, payload=None, version="v1", expect=201):
        payload = payload or self.dossier()
        r = self.post(f"/{version}/dossiers", json=payload)
        assert r.status_code == expect, r.text
        return payload, r.json()

    def read(self, ni):
        r = self.get("/v2/dossiers", params={"numeroInterne": ni})
        assert r.status_code == 200, r.text
        return r.json()

    def convention(self, payload, expect=201):
        r = self.post("/v1/conventions", json={
            "numeroInterneDossier": payload["numeroInterne"],
            "employeur": {"siret": payload["employeur"]["siret"]},
            "dateDebut": payload["formation"]["dateDebutFormation"],
            "dateFin": payload["formation"]["dateFinFormation"],
            "dureeFormation": payload["formation"]["dureeFormation"],
            "rncp": payload["formation"]["rncp"], "couts": {"coutPedagogique": 7900.0}})
        assert r.status_code == expect, r.text
        return r.json()


