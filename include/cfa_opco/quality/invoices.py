"""The invoices' quality suite (issue 12, point 3): Great Expectations suite ``cfa_opco_facture``.

Run by the quality gate on the run's frozen invoices (``staged_facture``), through the same
:class:`~cfa_opco.quality.expectations.GxRunner` as the dossiers' suites (or plain pandas: the
same functions). One rule per defect a CFA finance team types — their codes ``FACTURE_*`` and
their French messages live in ``reference/quality_rules.yaml``:

- ``FACTURE_MONTANT_SUPERIEUR`` amount above the échéance's (the ERP's schedule, the OPCO's own)
- ``FACTURE_AVANT_ECHEANCE``   invoice dated before its échéance starts
- ``FACTURE_NUMERO_DOUBLON``   one invoice number typed on several invoices of a source
- ``FACTURE_DOSSIER_NON_ENGAGE`` the dossier is quarantined in this run (the OPCO cannot have
  engaged it) or the OPCO refused / cancelled it
- ``FACTURE_ECHEANCE_MANQUANTE`` no échéance number
- ``FACTURE_MONTANT_INVALIDE`` negative, zero, or more than two decimals
- ``FACTURE_SIRET``            not the SIRET (valid key) of the contract's establishment
- ``FACTURE_VALEUR_ILLISIBLE`` a value extraction could not read

An invoice with an anomaly of severity error is "à corriger" (``facture_verdict`` TO_FIX) and is
not sent; its dossier is never held for it. A dossier that the OPCO has not decided yet is not an
anomaly: its invoice waits for the ENGAGE (a bucket of the send, not of the gate).
"""
from __future__ import annotations

import json
import logging
from decimal import Decimal

import numpy as np
import pandas as pd
import psycopg2.extras
from stdnum.fr import siret as stdnum_siret

from cfa_opco.quality import rules as R
from cfa_opco.quality.reference import catalogue

log = logging.getLogger(__name__)

DOMAIN = "facture"
NOT_ENGAGED_STATES = ("REFUSE", "ANNULE")
ANOMALY_COLUMNS = ["source_id", "ligne", "numero_facture", "numero_interne", "site_code", "rule_code", "severity",
                   "field", "valeur", "message"]


def _fmt_amount(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "(vide)"
    d = Decimal(str(v))
    places = 2 if d == d.quantize(Decimal("0.01")) else max(2, -d.normalize().as_tuple().exponent)
    return f"{d:,.{places}f}".replace(",", " ").replace(".", ",")


def _fmt_date(v) -> str:
    return v.strftime("%d/%m/%Y") if v is not None and not pd.isna(v) else "(vide)"


def _message(code: str):
    """describe(frame) of a rule: (value shown, French message from the catalogue)."""
    def describe(f: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        template = catalogue().get(code, {}).get("message") or code
        shown = f["_valeur_" + code]
        msgs = [template.format(numero_facture=r.numero_facture or "(sans numéro)",
                                numero_interne=r.numero_interne or "?",
                                echeance_numero="" if pd.isna(r.echeance_numero) else int(r.echeance_numero),
                                echeance_montant=_fmt_amount(r.echeance_montant), echeance_date=_fmt_date(r.echeance_date),
                                cfa_siret=r.cfa_siret or "?", valeur=v)
                for r, v in zip(f.itertuples(index=False), shown)]
        return shown, pd.Series(msgs, index=f.index)
    return describe


RULES: list[R.Rule] = []


def _add(code: str, field: str, inputs: list[str], title: str, fails, valeur) -> None:
    rule = R.Rule(code, DOMAIN, field, tuple(inputs), fails, _message(code), title, DOMAIN)
    RULES.append(rule)
    VALUES[code] = valeur
    R.EXTRA_RULES[rule.id] = rule


VALUES: dict = {}

_add("FACTURE_VALEUR_ILLISIBLE", "illisible", ["illisible", "ligne"], "Chaque valeur de la facture est lisible",
     lambda f: f["illisible"].notna(), lambda f: f["illisible"].map(
         lambda d: "; ".join(json.loads(d).values()) if isinstance(d, str) else ""))
_add("FACTURE_ECHEANCE_MANQUANTE", "echeance_numero", ["echeance_numero", "_lisible"],
     "Une facture indique l'échéance qu'elle facture",
     lambda f: f["_lisible"] & f["echeance_numero"].isna(), lambda f: pd.Series("(vide)", index=f.index))
_add("FACTURE_MONTANT_INVALIDE", "montant", ["_montant", "_centimes", "_lisible"],
     "Le montant d'une facture est positif, au centime près",
     lambda f: f["_lisible"] & f["_montant"].notna() & ((f["_montant"] <= 0) | ~f["_centimes"]),
     lambda f: f["montant"].map(_fmt_amount))
_add("FACTURE_MONTANT_SUPERIEUR", "montant", ["_montant", "_montant_ok", "echeance_montant", "_echeance_montant"],
     "Le montant d'une facture ne dépasse pas celui de son échéance",
     lambda f: f["_montant_ok"] & f["echeance_montant"].notna() & (f["_montant"] > f["_echeance_montant"] + 0.005),
     lambda f: f["montant"].map(_fmt_amount))
_add("FACTURE_AVANT_ECHEANCE", "date_facture", ["_date", "_echeance_date"],
     "Une échéance se facture à partir de sa date de début",
     lambda f: f["_date"].notna() & f["_echeance_date"].notna() & (f["_date"] < f["_echeance_date"]),
     lambda f: f["date_facture"].map(_fmt_date))
_add("FACTURE_NUMERO_DOUBLON", "numero_facture", ["source_id", "numero_facture", "_doublon"],
     "Chaque facture a son propre numéro",
     lambda f: f["_doublon"], lambda f: f["numero_facture"].fillna(""))
_add("FACTURE_DOSSIER_NON_ENGAGE", "numero_interne", ["numero_interne", "_non_engage"],
     "Une facture porte sur un dossier que l'OPCO a engagé (ou peut encore engager)",
     lambda f: f["_non_engage"].notna(), lambda f: f["_non_engage"].fillna(""))
_add("FACTURE_SIRET", "facture_siret", ["facture_siret", "cfa_siret", "_siret_ok"],
     "Une facture porte le SIRET de l'établissement du contrat",
     lambda f: ~f["_siret_ok"], lambda f: f["facture_siret"].fillna("(vide)"))

RULES_BY_CODE = {r.code: r for r in RULES}


def prepare(df: pd.DataFrame, quarantined: set[tuple[str, str]], states: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The invoices frame with the helper columns the rules read (one row per staged invoice)."""
    f = df.reset_index(drop=True).copy()
    f["illisible"] = f["illisible"].map(lambda v: (json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v)
                                        or None)
    f["_lisible"] = f["illisible"].isna()
    f["_montant"] = pd.to_numeric(f["montant"].map(lambda v: None if v is None else float(v)), errors="coerce")
    f["_centimes"] = f["montant"].map(lambda v: v is None or Decimal(v) == Decimal(v).quantize(Decimal("0.01")))
    f["_montant_ok"] = f["_lisible"] & f["_montant"].notna() & (f["_montant"] > 0) & f["_centimes"]
    f["_echeance_montant"] = pd.to_numeric(f["echeance_montant"].map(lambda v: None if v is None else float(v)),
                                           errors="coerce")
    f["_date"] = pd.to_datetime(f["date_facture"], errors="coerce")
    f["_echeance_date"] = pd.to_datetime(f["echeance_date"], errors="coerce")
    f["_doublon"] = f["numero_facture"].notna() & f.duplicated(["source_id", "numero_facture"], keep=False)

    def not_engaged(r) -> str | None:
        key = (r.source_id, r.numero_interne)
        etat = states.get(key)
        if etat in NOT_ENGAGED_STATES:
            return f"état à l'OPCO : {etat}"
        if key in quarantined and etat is None:
            return "dossier en quarantaine, jamais transmis"
        return None
    f["_non_engage"] = [not_engaged(r) for r in f.itertuples(index=False)]

    def siret_ok(r) -> bool:
        if not r.facture_siret or not r.cfa_siret:
            return True           # a missing SIRET is not this rule's (the OPCO takes the key's)
        return r.facture_siret == r.cfa_siret and stdnum_siret.is_valid(r.facture_siret)
    f["_siret_ok"] = [siret_ok(r) for r in f.itertuples(index=False)]
    for code, valeur in VALUES.items():
        f["_valeur_" + code] = valeur(f)
    return f


def severities(overrides: dict | None = None) -> dict[str, str]:
    sev = R.severities(overrides)
    return {r.code: sev.get(r.code, "error") for r in RULES}


def check_invoices(df: pd.DataFrame, quarantined: set, states: dict, *, severity_overrides: dict | None = None,
                   engine: str = "gx", runner=None, run_name: str = "cfa_opco") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(anomalies, verdicts) of a frame of staged invoices: one anomaly row per (invoice, rule);
    one verdict per invoice (TRANSMIT, or TO_FIX with its rule codes)."""
    sev = severities(severity_overrides)
    active = [r for r in RULES if sev[r.code] != "off"]
    if not len(df):
        return (pd.DataFrame(columns=ANOMALY_COLUMNS),
                pd.DataFrame(columns=["source_id", "ligne", "verdict", "rule_codes"]))
    frame = prepare(df, quarantined, states)
    if engine == "gx":
        if runner is None:
            from cfa_opco.quality.expectations import GxRunner  # lazy: great_expectations (seconds)

            runner = GxRunner()
        inputs = list(dict.fromkeys(c for r in active for c in r.inputs))
        gx_frame = frame[inputs].astype({c: object for c in inputs if frame[c].dtype == object})
        gx_frame["echeance_montant"] = frame["_echeance_montant"]
        failing, _ = runner.validate_frame(DOMAIN, gx_frame, active, sev, run_name)
    else:
        failing = {r.id: np.flatnonzero(r.fails(frame).fillna(False).to_numpy(dtype=bool)) for r in active}
    parts = []
    for r in active:
        pos = failing.get(r.id)
        if pos is None or not len(pos):
            continue
        sub = frame.iloc[pos]
        shown, msgs = r.describe(sub)
        parts.append(pd.DataFrame({"source_id": sub["source_id"].values, "ligne": sub["ligne"].values,
                                   "numero_facture": sub["numero_facture"].values,
                                   "numero_interne": sub["numero_interne"].values,
                                   "site_code": sub["site_code"].values, "rule_code": r.code,
                                   "severity": sev[r.code], "field": r.field,
                                   "valeur": np.asarray(shown, dtype=object), "message": msgs.values}))
    anomalies = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ANOMALY_COLUMNS)
    errors = anomalies[anomalies["severity"] == "error"].groupby(["source_id", "ligne"])["rule_code"].agg(
        lambda s: sorted(set(s))) if len(anomalies) else pd.Series(dtype=object)
    verdicts = frame[["source_id", "ligne", "site_code", "numero_facture", "numero_interne"]].copy()
    codes = [errors.get((s, l)) if len(errors) else None for s, l in zip(verdicts["source_id"], verdicts["ligne"])]
    verdicts["rule_codes"] = [c or [] for c in codes]
    verdicts["verdict"] = ["TO_FIX" if c else "TRANSMIT" for c in codes]
    return anomalies, verdicts


def run_invoice_checks(conn, run_id: str, *, severity_overrides: dict | None = None, engine: str = "gx",
                       runner=None) -> dict:
    """Check the run's frozen invoices (after the dossiers' verdicts of the same run); store
    ``facture_verdict`` and ``facture_anomaly``; return {checked, to_fix, by_rule, anomalies (DataFrame)}."""
    with conn.cursor() as cur:
        cur.execute("""SELECT source_id, ligne, numero_facture, numero_interne, echeance_numero, date_facture, montant,
                              facture_siret, cfa_siret, site_code, echeance_date, echeance_montant, illisible
                       FROM staged_facture WHERE run_id = %s ORDER BY source_id, ligne""", (run_id,))
        cols = [d[0] for d in cur.description]
        df = pd.DataFrame(cur.fetchall(), columns=cols)
        cur.execute("""SELECT source_id, numero_interne FROM quality_verdict WHERE run_id = %s
                       AND verdict = 'QUARANTINE'""", (run_id,))
        quarantined = set(cur.fetchall())
        cur.execute("""SELECT od.source_id, od.numero_interne, od.etat FROM opco_dossier od
                       JOIN staged_facture f ON f.run_id = %s AND f.source_id = od.source_id
                        AND f.numero_interne = od.numero_interne""", (run_id,))
        states = {(s, n): e for s, n, e in cur.fetchall()}
    anomalies, verdicts = check_invoices(df, quarantined, states, severity_overrides=severity_overrides,
                                         engine=engine, runner=runner)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM facture_verdict WHERE run_id = %s", (run_id,))
        cur.execute("DELETE FROM facture_anomaly WHERE run_id = %s", (run_id,))
        if len(verdicts):
            psycopg2.extras.execute_values(cur, """INSERT INTO facture_verdict (run_id, source_id, ligne, verdict,
                rule_codes) VALUES %s""", [(run_id, s, l, v, c) for s, l, v, c in zip(
                verdicts["source_id"], verdicts["ligne"], verdicts["verdict"], verdicts["rule_codes"])],
                page_size=1000)
        if len(anomalies):
            psycopg2.extras.execute_values(cur, """INSERT INTO facture_anomaly (run_id, source_id, ligne,
                numero_facture, numero_interne, site_code, rule_code, severity, field, valeur, message) VALUES %s""",
                [(run_id, *r) for r in anomalies[ANOMALY_COLUMNS].itertuples(index=False, name=None)],
                page_size=1000)
    conn.commit()
    by_rule = anomalies["rule_code"].value_counts().to_dict() if len(anomalies) else {}
    return {"checked": len(verdicts), "to_fix": int((verdicts["verdict"] == "TO_FIX").sum()) if len(verdicts) else 0,
            "by_rule": {k: int(v) for k, v in by_rule.items()}, "anomalies": anomalies}
