"""Per-OPCO capability table of the API CFA-OPCO, read at run time from
``include/cfa_opco/reference/opco_capabilities.yaml`` (the one place to correct when an
OPCO opens or closes a route). Only the route id → (method, path) mapping lives here."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

CAPABILITIES_FILE = Path(__file__).resolve().parents[2] / "reference" / "opco_capabilities.yaml"

# route id -> (HTTP method, path below the base URL .../ApiEchangeCFA)
ROUTES: dict[str, tuple[str, str]] = {
    "status": ("GET", "/v1/status"),
    "cfakeyinfo": ("GET", "/v2/cfakeyinfo"),
    "dossiers_v1": ("POST", "/v1/dossiers"),
    "dossiers_v2": ("POST", "/v2/dossiers"),
    "dossier_read_v2": ("GET", "/v2/dossiers"),
    "liste_v1": ("GET", "/v1/dossiers/liste"),
    "etats_v2": ("GET", "/v2/dossiers/etats"),
    "documents_v1": ("POST", "/v1/documents"),
    "conventions_v1": ("POST", "/v1/conventions"),
    "certificats_v2": ("POST", "/v2/certificats"),
    "factures_v1": ("POST", "/v1/factures"),
    "factures_etats_v2": ("GET", "/v2/factures/etats"),
    "rupture_v2": ("POST", "/v2/dossiers/rupture/employeur"),
}

# Human labels, for "not transmissible to this OPCO by API" messages
ROUTE_LABELS: dict[str, str] = {
    "status": "l'état de l'API",
    "cfakeyinfo": "la vérification de clé",
    "dossiers": "les dossiers de contrat",
    "dossiers_v1": "les dossiers de contrat (v1)",
    "dossiers_v2": "les dossiers de contrat (v2)",
    "dossier_read_v2": "la lecture d'un dossier",
    "liste_v1": "la liste d'états de dossiers",
    "etats_v2": "les états de dossiers par période",
    "documents_v1": "les pièces justificatives",
    "conventions_v1": "les conventions de formation",
    "certificats_v2": "les certificats de réalisation",
    "factures_v1": "les factures",
    "factures_etats_v2": "les états de factures",
    "rupture_v2": "les ruptures de contrat",
}


def opco_code_from_conn_id(conn_id: str) -> tuple[str | None, str | None]:
    """``opco_opco_2i_775672272`` → ("opco_2i", "775672272"); (None, None) if not that shape."""
    if not conn_id.startswith("opco_"):
        return None, None
    rest = conn_id[len("opco_"):]
    code, _, siren = rest.rpartition("_")
    if not code or not (len(siren) == 9 and siren.isdigit()):
        return None, None
    return code.lower(), siren


@functools.lru_cache(maxsize=4)
def load_table(path: str | None = None) -> dict[str, dict]:
    return _load_table(str(path or CAPABILITIES_FILE))


@functools.lru_cache(maxsize=8)
def _load_table(path: str) -> dict[str, dict]:
    """The table, read once per process (every hook and every routed dossier asks for it)."""
    import yaml

    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    out = {}
    for code, spec in (doc.get("opcos") or {}).items():
        out[str(code).lower()] = {"name": spec.get("name") or str(code).upper(),
                                  "routes": frozenset(spec.get("routes") or ()),
                                  "oauth2_v2": bool(spec.get("oauth2_v2", False))}
    return out


@dataclass(frozen=True)
class Capabilities:
    code: str
    name: str
    routes: frozenset
    needs_oauth_v2: bool = False

    @classmethod
    def for_opco(cls, code: str, path: str | None = None) -> "Capabilities":
        table = load_table(path)
        spec = table.get((code or "").lower())
        if spec is None:
            raise KeyError(f"OPCO inconnu de la table des capacités : {code!r} (connus : {sorted(table)})")
        return cls(code.lower(), spec["name"], spec["routes"], spec["oauth2_v2"])

    @staticmethod
    def known() -> list[str]:
        return sorted(load_table())

    def serves(self, route_id: str) -> bool:
        return route_id in self.routes

    def contract_route(self) -> str | None:
        """The route dossiers go through: v2 when served, else v1, else None."""
        if self.serves("dossiers_v2"):
            return "dossiers_v2"
        if self.serves("dossiers_v1"):
            return "dossiers_v1"
        return None

    def state_route(self) -> str | None:
        """How states are followed: etats_v2 (windowed), liste_v1 (per 100), or None."""
        if self.serves("etats_v2"):
            return "etats_v2"
        if self.serves("liste_v1"):
            return "liste_v1"
        return None

    def needs_token(self, route_id: str) -> bool:
        return self.needs_oauth_v2 and ROUTES[route_id][1].startswith("/v2/")
