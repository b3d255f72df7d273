"""Errors of the OPCO client. Messages name the OPCO, the SIREN and the connection, never
a key, a token or a request body (bodies carry NIRs)."""
from __future__ import annotations

import datetime as dt

from .norm import opco_label, route_label


class OpcoError(Exception):
    """Any error of the OPCO client (also: a read route answered 4xx where a list was expected)."""





class OpcoAuthError(OpcoError):
    """401/403: unknown, expired or wrong-SIREN key (or OAuth2 client refused)."""

    def __init__(self, opco: str, siren: str | None, status: int | None, message: str = "",
                 expires_on: dt.date | str | None = None, conn_id: str | None = None, code: str | None = None):
        if isinstance(expires_on, str):
            try:
                expires_on = dt.date.fromisoformat(expires_on[:10])
            except ValueError:
                expires_on = None
        self.opco, self.siren, self.status = opco, siren, status
        self.server_message, self.expires_on, self.code = message or "", expires_on, code
        self.conn_id = conn_id or (f"opco_{opco}_{siren}" if opco and siren else None)
        super().__init__(self._text())

    @property
    def expired(self) -> bool:
        return self.expires_on is not None and (self.code in (None, "CLE_EXPIREE") or "expir" in self.server_message)

    def _text(self) -> str:
        who = f"La clé API de l'{opco_label(self.opco)} pour le SIREN {self.siren or '?'}"
        fix_conn = f"mettez à jour la connexion {self.conn_id}" if self.conn_id else "mettez à jour la connexion"
        if self.expires_on is not None and self.expired:
            return (f"{who} a expiré le {self.expires_on.isoformat()} : demandez une nouvelle clé sur "
                    f"l'extranet de l'OPCO et {fix_conn}")
        if self.code in ("CLIENT_INVALIDE", "OAUTH"):
            return (f"{who} : le client OAuth2 du logiciel est refusé par l'OPCO ({self.server_message}) : "
                    f"vérifiez oauth_client_id / oauth_client_secret dans la connexion {self.conn_id}")
        if self.code == "SIREN_DIFFERENT":
            return (f"{who} ne couvre pas ce dossier ({self.server_message}) : le dossier doit partir "
                    f"avec la clé du SIREN de son organisme de formation")
        if self.code == "SIRET_DIFFERENT":
            return (f"{who} est celle d'un autre établissement ({self.server_message}) : le dossier doit "
                    f"partir avec la clé du SIRET de son organisme de formation, ou celle de son SIREN")
        if self.status == 401:
            return (f"{who} est refusée (HTTP 401 : {self.server_message or 'clé inconnue'}) : vérifiez la clé "
                    f"ou demandez-en une nouvelle sur l'extranet de l'OPCO, puis {fix_conn}")
        return (f"{who} n'est pas acceptée (HTTP {self.status} : {self.server_message or 'accès refusé'}) : "
                f"vérifiez sur l'extranet de l'OPCO que la clé est active pour ce SIREN, puis {fix_conn}")


class OpcoRouteNotServed(OpcoError):
    """The OPCO does not serve this route by API: a per-dossier reason, raised before any request."""

    def __init__(self, opco: str, route_id: str):
        self.opco, self.route_id = opco, route_id
        label = route_label(route_id)
        super().__init__(f"Non transmissible à l'{opco_label(opco)} par API : l'OPCO ne reçoit pas "
                         f"{label} par l'API CFA-OPCO (route {route_id}) — dépôt sur son portail")


class OpcoUnavailable(OpcoError):
    """Retries exhausted on 5xx / timeouts / dropped connections (or too many 429)."""

    def __init__(self, opco: str, route_id: str, attempts: int, last_error: str):
        self.opco, self.route_id, self.attempts, self.last_error = opco, route_id, attempts, last_error
        super().__init__(f"L'API de l'{opco_label(opco)} ne répond pas ({route_id}) après {attempts} "
                         f"tentatives : {last_error}")
