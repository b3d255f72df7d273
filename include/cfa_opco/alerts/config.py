"""Alert settings: the Airflow Variable ``cfa_opco_alerts`` (JSON). No Variable, or no
channel in it, means alerts are off (the demo's default): nothing is evaluated, nothing sent.

Example (every key optional)::

    {"email_conn_id": "smtp_default", "from_email": null, "to": ["exploitation@cfa.fr"],
     "webhook_conn_id": "cfa_alerts_webhook",
     "refusal_rate_threshold": 0.2, "error_rate_threshold": 0.1, "min_dossiers": 10,
     "key_expiry_days": 30, "repeat_hours": 24,
     "site_leads": {"PAR": "qualite.paris@cfa.fr", "LYO": ["a@cfa.fr", "b@cfa.fr"]},
     "kinds": ["transmission_failed", "key", "in_doubt", "rates", "site_anomalies"]}

The connections hold the addresses and secrets (SMTP host/login/password, the webhook URL
and its token); the Variable only names them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cfa_opco.pipeline.config import variable

VARIABLE = "cfa_opco_alerts"
KINDS = ("transmission_failed", "key", "in_doubt", "rates", "site_anomalies")


class AlertsConfigError(ValueError):
    """The Variable cannot be read as alert settings (the message says which key)."""


def _emails(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.replace(";", ",").split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise AlertsConfigError(f"{VARIABLE}.{where} : une adresse ou une liste d'adresses e-mail est attendue")
    out = tuple(v.strip() for v in value if v and v.strip())
    bad = [v for v in out if "@" not in v]
    if bad:
        raise AlertsConfigError(f"{VARIABLE}.{where} : adresse(s) e-mail invalide(s) : {', '.join(bad)}")
    return out


def _rate(raw: dict, name: str, default: float) -> float:
    v = raw.get(name, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
        raise AlertsConfigError(f"{VARIABLE}.{name} : un taux entre 0 et 1 est attendu (reçu {v!r})")
    return float(v)


def _int(raw: dict, name: str, default: int | None, minimum: int = 0) -> int | None:
    v = raw.get(name, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise AlertsConfigError(f"{VARIABLE}.{name} : un entier ≥ {minimum} est attendu (reçu {v!r})")
    return v


@dataclass(frozen=True)
class AlertsConfig:
    email_conn_id: str | None = None
    from_email: str | None = None
    to: tuple[str, ...] = ()
    webhook_conn_id: str | None = None
    refusal_rate_threshold: float = 0.2
    error_rate_threshold: float = 0.1
    min_dossiers: int = 10               # an OPCO's rates are judged from this many dossiers in the run
    key_expiry_days: int | None = None   # None: the Variable cfa_opco_key_expiry_warning_days (30)
    repeat_hours: int = 24               # a key alert is repeated at most once per this many hours
    site_leads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset(KINDS)
    switched_on: bool = True             # "enabled": false turns everything off, channels kept

    @property
    def email_on(self) -> bool:
        return bool(self.email_conn_id) and bool(self.to or self.site_leads)

    @property
    def webhook_on(self) -> bool:
        return bool(self.webhook_conn_id)

    @property
    def enabled(self) -> bool:
        return self.switched_on and (self.email_on or self.webhook_on)

    def wants(self, kind: str) -> bool:
        return self.enabled and kind in self.kinds

    def recipients(self, site: str | None = None) -> tuple[str, ...]:
        """Who gets an e-mail: a site's digest goes to its quality lead(s), else to ``to``."""
        if site is not None and self.site_leads.get(site):
            return self.site_leads[site]
        return self.to


OFF = AlertsConfig()


def parse(raw: Any) -> AlertsConfig:
    """Alert settings from the Variable's value (a JSON text or an already decoded dict)."""
    if raw is None or raw == "":
        return OFF
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise AlertsConfigError(f"{VARIABLE} n'est pas du JSON lisible : {exc}") from None
    if not isinstance(raw, dict):
        raise AlertsConfigError(f"{VARIABLE} : un objet JSON est attendu")
    known = {"enabled", "email_conn_id", "from_email", "to", "webhook_conn_id", "refusal_rate_threshold",
             "error_rate_threshold", "min_dossiers", "key_expiry_days", "repeat_hours", "site_leads", "kinds"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AlertsConfigError(f"{VARIABLE} : clé(s) inconnue(s) {', '.join(unknown)} "
                                f"(attendues : {', '.join(sorted(known))})")
    leads = raw.get("site_leads") or {}
    if not isinstance(leads, dict):
        raise AlertsConfigError(f"{VARIABLE}.site_leads : un objet {{code site: adresse(s)}} est attendu")
    kinds = raw.get("kinds")
    if kinds is None:
        kinds = list(KINDS)
    if not isinstance(kinds, list) or set(kinds) - set(KINDS):
        raise AlertsConfigError(f"{VARIABLE}.kinds : une liste parmi {', '.join(KINDS)} est attendue")
    for name in ("email_conn_id", "webhook_conn_id", "from_email"):
        if raw.get(name) is not None and not isinstance(raw.get(name), str):
            raise AlertsConfigError(f"{VARIABLE}.{name} : un texte est attendu")
    return AlertsConfig(
        email_conn_id=raw.get("email_conn_id") or None,
        from_email=raw.get("from_email") or None,
        to=_emails(raw.get("to"), "to"),
        webhook_conn_id=raw.get("webhook_conn_id") or None,
        refusal_rate_threshold=_rate(raw, "refusal_rate_threshold", 0.2),
        error_rate_threshold=_rate(raw, "error_rate_threshold", 0.1),
        min_dossiers=_int(raw, "min_dossiers", 10, 1),
        key_expiry_days=_int(raw, "key_expiry_days", None, 0),
        repeat_hours=_int(raw, "repeat_hours", 24, 0),
        site_leads={str(site): _emails(v, f"site_leads.{site}") for site, v in leads.items()},
        kinds=frozenset(kinds),
        switched_on=bool(raw.get("enabled", True)),
    )


def load() -> AlertsConfig:
    """The settings in force (the Variable; off when it is not set)."""
    return parse(variable(VARIABLE, None))
