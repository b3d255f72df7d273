"""Which OPCO, and which key, a dossier goes to — or why a human must decide.

The OPCO comes from the employer's IDCC (reference/idcc_opco.csv); the key from the CFA's
establishment: an OPCO may issue a key per establishment (SIRET, connection
``opco_<code>_<siret>``) or per company (SIREN, ``opco_<code>_<siren>``). The SIRET's key is
taken when it exists, else the SIREN's, and the Route says which (``key_scope``). Nothing is
guessed: an IDCC that maps to no OPCO, an OPCO that takes no contract by API, or an
establishment without a key for that OPCO is a per-dossier decision for a person, with the
reason.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from typing import Callable, Iterable

from airflow.sdk import BaseHook

from cfa_opco import settings
from cfa_opco.providers.opco.capabilities import Capabilities
from cfa_opco.providers.opco.norm import conn_id_for

SCOPE_SIRET = "SIRET"   # the establishment's own key
SCOPE_SIREN = "SIREN"   # the company's key, shared by its establishments
ROUTED = "ROUTED"
NEEDS_HUMAN = "NEEDS_HUMAN"
NOT_SERVED = "NOT_SERVED"


@dataclass(frozen=True)
class Route:
    decision: str
    opco_code: str | None = None    # lower case, as in connection ids
    cfa_siren: str | None = None
    conn_id: str | None = None
    reason: str | None = None
    key_scope: str | None = None    # SIRET or SIREN: which key conn_id is (routed dossiers only)


@functools.lru_cache(maxsize=1)
def idcc_to_opco() -> dict[str, str]:
    with open(settings.REFERENCE_DIR / "idcc_opco.csv", encoding="utf-8", newline="") as f:
        return {r["idcc"].zfill(4): r["opco_code"].lower() for r in csv.DictReader(f)}



def airflow_connection_exists(conn_id: str) -> bool:
    try:
        BaseHook.get_connection(conn_id)
        return True
    except Exception:  # AirflowNotFoundException and friends
        return False


class Router:
    """Routes dossiers; each connection's existence is looked up once."""

    def __init__(self, connection_exists: Callable[[str], bool] = airflow_connection_exists):
        self._exists = functools.lru_cache(maxsize=None)(connection_exists)
        self._capabilities = Capabilities

    def route(self, idcc: str | None, cfa_siret: str | None) -> Route:
        idcc = (idcc or "").strip()
        siren = (cfa_siret or "")[:9]
        if idcc in ("9999", "9998") or not idcc:
            return Route(NEEDS_HUMAN, cfa_siren=siren, reason=(
                f"IDCC {idcc or 'absent'} : pas de convention collective identifiée, l'OPCO ne peut "
                "pas être déduit — à router à la main (recherche SIRET → OPCO de France compétences)"))
        opco = idcc_to_opco().get(idcc.zfill(4))
        if opco is None:
            return Route(NEEDS_HUMAN, cfa_siren=siren, reason=(
                f"IDCC {idcc} absent de la table IDCC → OPCO : l'OPCO ne peut pas être déduit — "
                "à router à la main"))
        if self._capabilities.for_opco(opco).contract_route() is None:
            return Route(NOT_SERVED, opco, siren, reason=(
                f"L'OPCO {opco.upper()} ne reçoit pas les contrats par l'API CFA-OPCO : "
                "dépôt sur son portail"))
        siret = (cfa_siret or "").strip()
        if len(siret) == 14 and siret.isdigit():
            by_siret = conn_id_for(opco, siret)
            if self._exists(by_siret):
                return Route(ROUTED, opco, siren, by_siret, key_scope=SCOPE_SIRET)
        conn_id = conn_id_for(opco, siren)
        if not self._exists(conn_id):
            tried = (f"connexions {conn_id_for(opco, siret)} et {conn_id} absentes" if len(siret) == 14
                     else f"connexion {conn_id} absente")
            return Route(NEEDS_HUMAN, opco, siren, reason=(
                f"Aucune clé API {opco.upper()} pour le SIRET {siret or '?'} ni pour le SIREN {siren} "
                f"({tried}) : demander la clé sur l'extranet de l'OPCO et créer la connexion"))
        return Route(ROUTED, opco, siren, conn_id, key_scope=SCOPE_SIREN)

    def route_many(self, rows: Iterable[tuple[str | None, str | None]]) -> list[Route]:
        return [self.route(idcc, siret) for idcc, siret in rows]
