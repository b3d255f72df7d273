"""The alerts and their French texts. An :class:`Alert` is what every channel renders
(e-mail subject and HTML body, chat text); :func:`sanitize` is applied to every text that
goes out: secrets named by the caller and those Airflow masks are replaced, NIRs and birth
dates masked the way the proofs are (``cfa_opco.providers.opco.reading.mask``)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Iterable

try:   # the Task SDK's masker: the secrets this process fetched (connection passwords...)
    from airflow.sdk._shared.secrets_masker import redact as _airflow_redact
except ImportError:   # another Airflow layout: the explicit secrets are still masked
    _airflow_redact = None

from cfa_opco.providers.opco.norm import opco_label, parse_conn_id
from cfa_opco.providers.opco.reading import mask

SUBJECT_PREFIX = "[CFA-OPCO]"
MAX_ERROR = 600
# how the message of a refused key starts (cfa_opco.providers.opco.exceptions.OpcoAuthError and
# OpcoHook.key_expiry_warning): a transmit task failing with it is a key alert, not a batch alert
KEY_MESSAGE_START = "La clé API de l'"


def sanitize(text: str | None, secrets: Iterable[str] = ()) -> str:
    """A text safe to send: secrets out, personal data masked."""
    text = str(text or "")
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    if _airflow_redact is not None:
        try:
            text = str(_airflow_redact(text))
        except Exception:   # the masker not set up in this process: the explicit secrets went out
            pass
    return mask(text)


@dataclass
class Alert:
    kind: str                                  # config.KINDS
    subject: str                               # without the prefix
    lines: list[str]                           # the body, one paragraph each (plain text)
    links: dict[str, str] = field(default_factory=dict)   # label -> absolute URL
    site: str | None = None                    # a site digest: sent to that site's quality lead
    facts: dict = field(default_factory=dict)  # counts for the webhook's JSON (no personal data)
    fingerprint: str = ""                      # what "the same alert" means for the journal
    table: list[tuple[str, ...]] = field(default_factory=list)   # optional rows (header first)

    def clean(self, secrets: Iterable[str] = ()) -> "Alert":
        secrets = list(secrets)
        s = lambda t: sanitize(t, secrets)  # noqa: E731
        return Alert(self.kind, s(self.subject), [s(x) for x in self.lines], dict(self.links), self.site,
                     {k: (s(v) if isinstance(v, str) else v) for k, v in self.facts.items()}, self.fingerprint,
                     [tuple(s(c) for c in row) for row in self.table])

    @property
    def full_subject(self) -> str:
        return f"{SUBJECT_PREFIX} {self.subject}"

    def text(self) -> str:
        parts = list(self.lines)
        if self.table:
            parts.append("\n".join(" | ".join(row) for row in self.table))
        parts += [f"{label} : {url}" for label, url in self.links.items()]
        return "\n\n".join(parts)

    def html(self) -> str:
        body = "".join(f"<p>{html.escape(x)}</p>" for x in self.lines)
        if self.table:
            head, *rows = self.table
            body += ("<table border='1' cellpadding='4' cellspacing='0'><thead><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                     + "</tbody></table>")
        if self.links:
            body += "<ul>" + "".join(f"<li><a href='{html.escape(u, quote=True)}'>{html.escape(lbl)}</a></li>"
                                     for lbl, u in self.links.items()) + "</ul>"
        return (f"<!doctype html><html lang='fr'><head><meta charset='utf-8'></head><body>"
                f"<h2>{html.escape(self.subject)}</h2>{body}"
                "<p style='color:#777'>Alerte envoyée par le connecteur CFA-OPCO (Airflow).</p></body></html>")


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def transmission_failed(*, opco: str | None, siren: str | None, conn_id: str | None, count, error: str,
                        run_id: str, task: str, log_url: str | None, run_url: str | None, try_number=None) -> Alert:
    """1. a transmission batch failed (its task is failed); a refused key is a key alert."""
    key = error.startswith(KEY_MESSAGE_START)
    ident = parse_conn_id(conn_id)[1] if conn_id else None     # the key's scope: a SIRET's key or the SIREN's
    who = (f"{opco_label(opco)}, SIRET {ident}" if ident and len(ident) == 14
           else f"{opco_label(opco)}, SIREN {siren or ident or '?'}")
    if key:
        subject = f"Clé API refusée : {who} — lot non transmis"
        first = (f"Le lot de {count if count is not None else '?'} dossier(s) pour l'{who} (connexion {conn_id}) "
                 f"n'a pas été transmis : l'OPCO refuse la clé API.")
    else:
        subject = f"Échec de transmission : {who}"
        first = (f"La transmission du lot de {count if count is not None else '?'} dossier(s) pour l'{who} "
                 f"(connexion {conn_id}) a échoué (tâche {task}).")
    links = {k: v for k, v in (("Journal de la tâche", log_url), ("Run Airflow", run_url)) if v}
    return Alert("key" if key else "transmission_failed", subject,
                 [first, f"Erreur : {error[:MAX_ERROR]}", f"Run : {run_id}",
                  "Une fois la clé remplacée dans la connexion (Admin → Connections), relancez la tâche depuis "
                  "l'interface Airflow (Clear) : un dossier déjà envoyé ne repart jamais une seconde fois." if key else
                  "Ce qui a été envoyé avant l'échec est dans le registre ; relancer la tâche depuis l'interface "
                  "Airflow (Clear) n'envoie jamais un dossier deux fois."],
                 links, facts={"opco": opco, "siren": siren, "conn_id": conn_id, "dossiers": count, "run_id": run_id,
                               "task": task},
                 fingerprint=f"{'key' if key else 'transmission_failed'}:{run_id}:{task}:{try_number}")


def key_warning(conn_id: str, text: str, days: int) -> Alert:
    """2. a key expiring within ``days`` days, invalid or refused (check_keys of the follow-up DAG)."""
    opco, ident = parse_conn_id(conn_id)
    expired = any(w in text for w in ("a expiré", "refusée", "invalide", "pas acceptée", "non vérifiée"))
    what = "refusée ou expirée" if expired else f"expire dans moins de {days} jours"
    return Alert("key", f"Clé API {what} : {opco_label(opco)}, SIREN/SIRET {ident or '?'}",
                 [text, "Faire une rotation de clé : demander une nouvelle clé sur l'extranet de l'OPCO, puis "
                        f"remplacer le mot de passe de la connexion Airflow {conn_id} (Admin → Connections). "
                        "Rien d'autre à changer."],
                 facts={"conn_id": conn_id, "opco": opco, "identifiant": ident, "expiree_ou_refusee": expired},
                 fingerprint=f"key:{conn_id}")


def in_doubt(run_id: str, by_opco: dict[str, int], examples: list[str], reasons: dict[str, int],
             run_url: str | None) -> Alert:
    """3. dossiers still in doubt (answer lost) once the run's decision deadline has passed."""
    total = sum(by_opco.values())
    lines = [f"{total} dossier(s) du run {run_id} sont en doute : leur envoi n'a pas reçu de réponse et ils n'ont "
             "pas encore pu être relus chez l'OPCO.",
             "Le DAG cfa_opco_followup (tâche settle_in_doubt) les relit toutes les 30 minutes : un dossier "
             "retrouvé est enregistré comme transmis, un dossier absent est envoyé une fois, jamais deux."]
    if reasons:
        lines.append("Raisons : " + " ; ".join(f"{n} × {r or '(sans raison)'}" for r, n in reasons.items()))
    if examples:
        lines.append("Dossiers (numéro interne) : " + ", ".join(examples[:20]) + (" …" if len(examples) > 20 else ""))
    table = [("OPCO", "Dossiers en doute")] + [(opco_label(o), str(n)) for o, n in sorted(by_opco.items())]
    return Alert("in_doubt", f"{total} dossier(s) en doute après l'échéance du run", lines,
                 {"Run Airflow": run_url} if run_url else {}, facts={"run_id": run_id, "en_doute": total,
                                                                     "par_opco": by_opco},
                 fingerprint=f"in_doubt:{run_id}", table=table)


def rates(run_id: str, opco: str, stats: dict, *, refusal_threshold: float, error_threshold: float,
          run_url: str | None) -> Alert:
    """4. an OPCO's refusal rate or error rate above its threshold in a run."""
    over = []
    if stats["refusal_rate"] is not None and stats["refusal_rate"] > refusal_threshold:
        over.append(f"taux de refus {_pct(stats['refusal_rate'])} (seuil {_pct(refusal_threshold)}) : "
                    f"{stats['refused']} refusé(s) sur {stats['decided']} décision(s)")
    if stats["error_rate"] is not None and stats["error_rate"] > error_threshold:
        over.append(f"taux d'erreur {_pct(stats['error_rate'])} (seuil {_pct(error_threshold)}) : "
                    f"{stats['errors']} envoi(s) en erreur sur {stats['attempted']} "
                    f"({stats['rejected']} rejeté(s) par l'OPCO, {stats['in_doubt']} en doute, "
                    f"{stats['failed']} en échec)")
    lines = [f"{opco_label(opco)}, run {run_id} : " + " ; ".join(over) + ".",
             "Les motifs de refus et les erreurs de chaque dossier sont dans le rapport du run et dans la vue "
             "« Dossiers OPCO »."]
    return Alert("rates", f"{opco_label(opco)} : " + " et ".join(o.split(" (")[0] for o in over), lines,
                 {"Run Airflow": run_url} if run_url else {}, facts={"run_id": run_id, "opco": opco, **stats},
                 fingerprint=f"rates:{run_id}:{opco}")


def site_anomalies(run_id: str, site: str, by_rule: dict[str, int], dossiers: int, report_url: str | None,
                   site_url: str | None = None) -> Alert:
    """5. one digest per site: the new blocking anomalies of the run, by rule, and its report."""
    total = sum(by_rule.values())
    lines = [f"Le contrôle qualité du run {run_id} a trouvé {total} nouvelle(s) anomalie(s) bloquante(s) sur "
             f"{dossiers} dossier(s) du site {site}. Ces dossiers restent en quarantaine et ne partent pas à "
             "l'OPCO tant qu'ils ne sont pas corrigés dans l'ERP.",
             f"La page du site {site} (lien ci-dessous) liste, fiche par fiche, ce qu'il faut corriger dans l'ERP ; "
             "le dossier est renvoyé de lui-même au passage suivant une fois corrigé."]
    table = [("Règle", "Dossiers")] + [(rule, str(n)) for rule, n in sorted(by_rule.items(), key=lambda x: -x[1])]
    return Alert("site_anomalies", f"Site {site} : {dossiers} dossier(s) avec de nouvelles anomalies bloquantes",
                 lines, {k: v for k, v in ((f"Page du site {site} (fiches à corriger)", site_url),
                                          ("Rapport qualité du run", report_url)) if v}, site=site,
                 facts={"run_id": run_id, "site": site, "dossiers": dossiers, "anomalies": total,
                        "par_regle": by_rule},
                 fingerprint=f"site_anomalies:{run_id}:{site}", table=table)
