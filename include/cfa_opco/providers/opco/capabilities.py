"""Per-OPCO capability table of the API CFA-OPCO, read at run time from
``data/opco_capabilities.yaml`` beside this module (the one place to correct when an OPCO
opens or closes a route). Route ids are those of :data:`.norm.ROUTES`."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from .norm import ROUTES

CAPABILITIES_FILE = Path(__file__).resolve().parent / "data" / "opco_capabilities.yaml"


@functools.lru_cache(maxsize=4)
def load_table(path: str | None = None) -> dict[str, dict]:
    return _load_table(str(path or CAPABILITIES_FILE))


@functools.lru_cache(maxsize=8)
def _load_table(path: str) -> dict[str, dict]:
    """The table, read once per process (every hook and every routed dossier asks for it)."""
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
        return self.needs_oauth_v2 and ROUTES[route_id].version == "v2"
