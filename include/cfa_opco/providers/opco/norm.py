"""The API CFA-OPCO norm's vocabulary, in one place: OPCO codes, routes, states, contract
types, headers and the connection-id format.

Client (hook, async hook, trigger), sandbox and reports import these names; none of them
spells a route path, a state or an OPCO code of its own. Which OPCO serves which route is
data, not code: ``data/opco_capabilities.yaml`` (see :mod:`.capabilities`).

Nothing heavy is imported here: DAG files may import it at parse time.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# ---- OPCOs ---------------------------------------------------------------------------
# code -> display name (codes are the lower-case codes of shared/reference/idcc_opco.csv)
OPCO_NAMES: dict[str, str] = {
    "afdas": "AFDAS",
    "akto": "AKTO",
    "atlas": "OPCO Atlas",
    "constructys": "Constructys",
    "mobilites": "OPCO Mobilités",
    "ocapiat": "OCAPIAT",
    "opco_2i": "OPCO 2i",
    "opco_ep": "OPCO EP",
    "opcommerce": "L'Opcommerce",
    "sante": "OPCO Santé",
    "uniformation": "Uniformation",
}
OPCO_CODES: tuple[str, ...] = tuple(sorted(OPCO_NAMES))


def opco_label(code: str | None) -> str:
    """'OPCO AKTO', 'OPCO Atlas', 'OPCO Santé'... (the name, prefixed once), for messages."""
    name = OPCO_NAMES.get((code or "").lower(), (code or "?").upper())
    return name if name.upper().startswith("OPCO ") else f"OPCO {name}"


# ---- connection ids ------------------------------------------------------------------
CONN_TYPE = "opco"  # the Airflow connection type the provider registers (get_provider_info)
CONN_ID_PREFIX = "opco_"
_RE_CONN_ID = re.compile(r"^opco_(?P<code>[a-z0-9_]+?)_(?P<ident>\d{9}|\d{14})$")


def conn_id_for(opco_code: str, siren_or_siret: str) -> str:
    """``opco_<code>_<siren>`` (a key per OPCO and SIREN) or ``opco_<code>_<siret>`` (per SIRET)."""
    return f"{CONN_ID_PREFIX}{opco_code.lower()}_{siren_or_siret}"


# the OPCO's answer when a dossier is sent with a key that does not cover it: another
# company's (SIREN) key, or another establishment's (SIRET) key of the same company. The
# dossier is not transmissible with that key; the key itself is fine (its batch goes on).
KEY_SCOPE_ERRORS = frozenset({"SIREN_DIFFERENT", "SIRET_DIFFERENT"})


def key_scope_of(conn_id: str) -> str | None:
    """"SIRET" for an establishment's key (14 digits), "SIREN" for a company's, else None."""
    _, ident = parse_conn_id(conn_id)
    return None if ident is None else ("SIRET" if len(ident) == 14 else "SIREN")


def parse_conn_id(conn_id: str) -> tuple[str | None, str | None]:
    """``opco_opco_2i_775672272`` → ("opco_2i", "775672272"); (None, None) if not that shape.
    The second part is a SIREN (9 digits) or a SIRET (14 digits)."""
    m = _RE_CONN_ID.match(conn_id or "")
    if not m:
        return None, None
    return m.group("code"), m.group("ident")


# ---- headers -------------------------------------------------------------------------
HEADER_KEY = "X-API-KEY"
SOFTWARE_HEADERS: tuple[str, ...] = ("EDITEUR", "LOGICIEL", "VERSION")
DEFAULT_SOFTWARE = {"editeur": "CFA Network Data", "logiciel": "cfa-opco-connector", "version": "0.1.0"}


# ---- routes --------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    id: str
    method: str
    path: str            # below the base URL .../ApiEchangeCFA
    label: str           # French, for "not transmissible by API" messages

    @property
    def is_write(self) -> bool:
        return self.method != "GET"

    @property
    def version(self) -> str:
        return self.path.split("/")[1]


ROUTES: dict[str, Route] = {r.id: r for r in (
    Route("status", "GET", "/v1/status", "l'état de l'API"),
    Route("cfakeyinfo", "GET", "/v2/cfakeyinfo", "la vérification de clé"),
    Route("dossiers_v1", "POST", "/v1/dossiers", "les dossiers de contrat (v1)"),
    Route("dossiers_v2", "POST", "/v2/dossiers", "les dossiers de contrat (v2)"),
    Route("dossier_read_v2", "GET", "/v2/dossiers", "la lecture d'un dossier"),
    Route("liste_v1", "GET", "/v1/dossiers/liste", "la liste d'états de dossiers"),
    Route("etats_v2", "GET", "/v2/dossiers/etats", "les états de dossiers par période"),
    Route("documents_v1", "POST", "/v1/documents", "les pièces justificatives"),
    Route("conventions_v1", "POST", "/v1/conventions", "les conventions de formation"),
    Route("certificats_v2", "POST", "/v2/certificats", "les certificats de réalisation"),
    Route("factures_v1", "POST", "/v1/factures", "les factures"),
    Route("factures_etats_v2", "GET", "/v2/factures/etats", "les états de factures"),
    Route("rupture_v2", "POST", "/v2/dossiers/rupture/employeur", "les ruptures de contrat"),
)}
# a family of routes, for messages where either version would do
ROUTE_FAMILY_LABELS = {"dossiers": "les dossiers de contrat"}
OAUTH_TOKEN_ROUTE = "oauth_token"     # AKTO's OAuth2 client_credentials token (outside /ApiEchangeCFA)
LISTE_MAX = 100                       # /v1/dossiers/liste: at most 100 numbers per call
FIRST_PAGE = 1                        # /v2/dossiers/etats: pages start at 1


def route_label(route_id: str) -> str:
    r = ROUTES.get(route_id)
    return r.label if r else ROUTE_FAMILY_LABELS.get(route_id, route_id)


# ---- states --------------------------------------------------------------------------
class Etat(enum.StrEnum):
    """A dossier's state at the OPCO (``etat``)."""
    TRANSMIS = "TRANSMIS"                          # received
    EN_COURS_INSTRUCTION = "EN_COURS_INSTRUCTION"  # being examined
    ENGAGE = "ENGAGE"                              # accepted: funding committed
    REFUSE = "REFUSE"
    ANNULE = "ANNULE"
    SOLDE = "SOLDE"                                # fully paid
    RUPTU = "RUPTU"                                # terminated early


OPEN_STATES = frozenset({Etat.TRANSMIS, Etat.EN_COURS_INSTRUCTION})
FINAL_STATES = frozenset({Etat.ENGAGE, Etat.REFUSE, Etat.ANNULE, Etat.SOLDE, Etat.RUPTU})  # no more follow-up
DECIDED_STATES = frozenset({Etat.ENGAGE, Etat.REFUSE, Etat.ANNULE})                      # a decision was made
ACCEPTED_STATES = frozenset({Etat.ENGAGE, Etat.SOLDE, Etat.RUPTU})                       # they imply ENGAGE


class EtatFacture(enum.StrEnum):
    """An invoice's state (``etatFacture``). Only REGLE is seen in public material; the
    others are this project's convention (docs/api-conventions.md)."""
    EN_COURS = "EN_COURS"
    REGLE = "REGLE"
    REGLE_PARTIEL = "REGLE_PARTIEL"
    REJETEE = "REJETEE"


# ---- contract types (typeContratApp) ---------------------------------------------------
CONTRAT_INITIAL = frozenset({11})
CONTRAT_SUCCESSIF = frozenset({21, 22, 23})
CONTRAT_AVENANT = frozenset(range(31, 39))                 # 31–38: amendments (avenants)
AVENANT_NEEDS_PREVIOUS = frozenset(range(31, 38))          # 31–37 name the previous contract
CONTRACT_TYPES = CONTRAT_INITIAL | CONTRAT_SUCCESSIF | CONTRAT_AVENANT


def is_avenant(type_contrat: int | str | None) -> bool:
    try:
        return int(type_contrat) in CONTRAT_AVENANT
    except (TypeError, ValueError):
        return False


# ---- formats -------------------------------------------------------------------------
NUMERO_DECA_LENGTH = 15
RE_NUMERO_INTERNE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")   # 1–64 printable characters
