"""One line per échéance of an engaged dossier, with its invoice and payment, and the
aggregates of the cash view (per OPCO, site and month; overdue oldest first; rejections).

A line's ``situation`` is exactly one of :data:`SITUATIONS`, so the view's totals add up:
expected = paid + partly paid remainder + waiting payment + to invoice + rejected + cancelled.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

# situation -> label (display order)
SITUATIONS = {
    "regle": "Réglée",
    "regle_partiel": "Réglée partiellement",
    "facture": "Facturée, en attente de paiement",
    "rejete": "Facture rejetée par l'OPCO",
    "a_facturer": "À facturer",
    "annule": "Annulée (rupture du contrat)",
}


@dataclass
class CashLine:
    opco: str
    site: str
    source_id: str
    numero_interne: str
    echeance: int
    date_echeance: dt.date | None
    attendu: float
    facture: str | None = None            # the CFA's invoice number (latest one for this échéance)
    montant_facture: float | None = None
    etat_facture: str | None = None        # EN_COURS, REGLE, REJETE (the OPCO's), None = not invoiced
    montant_regle: float | None = None
    date_reglement: dt.date | None = None
    reference_virement: str | None = None
    commentaire: str | None = None
    annulee: bool = False                  # the OPCO cancelled it (rupture)
    sent_this_run: bool = False            # its invoice was transmitted by this run
    paid_this_run: bool = False            # its payment was read during this run

    @property
    def month(self) -> str:
        return self.date_echeance.strftime("%Y-%m") if self.date_echeance else "?"

    @property
    def situation(self) -> str:
        if self.annulee and self.etat_facture is None:
            return "annule"
        if self.etat_facture == "REGLE":
            paid = self.montant_regle if self.montant_regle is not None else self.montant_facture or 0.0
            return "regle" if paid + 0.005 >= (self.montant_facture or 0.0) else "regle_partiel"
        if self.etat_facture == "REJETE":
            return "rejete"
        if self.etat_facture is not None:
            return "facture"
        return "a_facturer"

    @property
    def paye(self) -> float:
        if self.etat_facture != "REGLE":
            return 0.0
        return self.montant_regle if self.montant_regle is not None else (self.montant_facture or 0.0)

    @property
    def facture_montant(self) -> float:
        """Invoiced and not rejected."""
        return (self.montant_facture or 0.0) if self.etat_facture in ("EN_COURS", "REGLE") else 0.0

    def overdue_days(self, today: dt.date) -> int | None:
        """Days since the échéance's date when money it should bring is still missing."""
        if self.situation in ("regle", "annule") or self.date_echeance is None or self.date_echeance >= today:
            return None
        return (today - self.date_echeance).days


@dataclass
class Totals:
    attendu: float = 0.0
    facture: float = 0.0
    paye: float = 0.0
    en_retard: float = 0.0
    n_echeances: int = 0
    n_retard: int = 0
    n_rejete: int = 0
    by_situation: dict[str, int] = field(default_factory=lambda: {k: 0 for k in SITUATIONS})

    def add(self, line: CashLine, today: dt.date) -> None:
        self.n_echeances += 1
        self.by_situation[line.situation] += 1
        if line.situation != "annule":
            self.attendu += line.attendu
        self.facture += line.facture_montant
        self.paye += line.paye
        if line.situation == "rejete":
            self.n_rejete += 1
        if line.overdue_days(today) is not None:
            self.n_retard += 1
            self.en_retard += max(0.0, line.attendu - line.paye)


@dataclass
class CashView:
    today: dt.date
    lines: list[CashLine]
    total: Totals
    by_key: dict[tuple[str, str, str], Totals]      # (opco, site, month)
    by_opco: dict[str, Totals]
    by_site: dict[str, Totals]
    by_month: dict[str, Totals]
    this_run: dict[str, float]

    @property
    def overdue(self) -> list[CashLine]:
        late = [ln for ln in self.lines if ln.overdue_days(self.today) is not None]
        return sorted(late, key=lambda ln: (ln.date_echeance, ln.opco, ln.numero_interne, ln.echeance))

    @property
    def rejected(self) -> list[CashLine]:
        return sorted((ln for ln in self.lines if ln.situation == "rejete"),
                      key=lambda ln: (ln.opco, ln.site, ln.numero_interne, ln.echeance))

    @property
    def partly_paid(self) -> list[CashLine]:
        return [ln for ln in self.lines if ln.situation == "regle_partiel"]


def build(lines: list[CashLine], today: dt.date | None = None) -> CashView:
    today = today or dt.date.today()
    total = Totals()
    by_key: dict = defaultdict(Totals)
    by_opco: dict = defaultdict(Totals)
    by_site: dict = defaultdict(Totals)
    by_month: dict = defaultdict(Totals)
    run = {"factures_transmises": 0, "montant_facture": 0.0, "paiements_recus": 0, "montant_paye": 0.0}
    for ln in lines:
        for t in (total, by_key[(ln.opco, ln.site, ln.month)], by_opco[ln.opco], by_site[ln.site],
                  by_month[ln.month]):
            t.add(ln, today)
        if ln.sent_this_run:
            run["factures_transmises"] += 1
            run["montant_facture"] += ln.montant_facture or 0.0
        if ln.paid_this_run and ln.etat_facture == "REGLE":
            run["paiements_recus"] += 1
            run["montant_paye"] += ln.paye
    assert sum(total.by_situation.values()) == total.n_echeances == len(lines)
    return CashView(today, lines, total, dict(sorted(by_key.items())), dict(sorted(by_opco.items())),
                    dict(sorted(by_site.items())), dict(sorted(by_month.items())), run)


# One row per échéance: the OPCO's schedule (opco_echeance, OPCOs with a read route) joined
# with the latest invoice sent for it (the outbox ledger, operation FACTURE) and what the OPCO
# said of that invoice (opco_facture); an invoice sent for an échéance the OPCO's schedule does
# not list (OPCOs without a read route: the ERP's schedule, from the invoice's staged row) is a
# line of its own. Site: the invoice's, else the dossier's latest staged row.
LINES_SQL = """
WITH fact AS (
    SELECT DISTINCT ON (t.source_id, t.payload->>'numeroInterneDossier', (t.payload->'echeance'->>'numero')::int)
           t.source_id, t.payload->>'numeroInterneDossier' AS numero_interne,
           (t.payload->'echeance'->>'numero')::int AS numero, t.payload->>'numeroInterneFacture' AS nif,
           (t.payload->>'montant')::numeric AS montant, t.run_id, t.opco_code, t.conn_id, t.id AS tid
    FROM transmission t
    WHERE t.operation = 'FACTURE' AND t.status = 'SENT' AND t.payload ? 'numeroInterneFacture'
    ORDER BY 1, 2, 3, t.id DESC
),
lines AS (
    SELECT COALESCE(e.source_id, f.source_id) AS source_id, COALESCE(e.numero_interne, f.numero_interne) AS ni,
           COALESCE(e.numero, f.numero) AS numero, COALESCE(e.opco_code, f.opco_code) AS opco_code,
           e.date_echeance, e.montant AS attendu, e.etat AS etat_echeance,
           f.nif, f.montant AS montant_facture, f.run_id, f.conn_id
    FROM opco_echeance e
    FULL OUTER JOIN fact f ON f.source_id = e.source_id AND f.numero_interne = e.numero_interne AND f.numero = e.numero
),
staged AS (
    SELECT DISTINCT ON (source_id, numero_facture) source_id, numero_facture, site_code, echeance_date,
           echeance_montant
    FROM staged_facture WHERE numero_facture IN (SELECT nif FROM fact)
    ORDER BY source_id, numero_facture, staged_at DESC
),
sites AS (
    SELECT DISTINCT ON (source_id, numero_interne) source_id, numero_interne, site_code
    FROM staged_dossier WHERE numero_interne IN (SELECT ni FROM lines)
    ORDER BY source_id, numero_interne, run_id DESC
)
SELECT l.opco_code, COALESCE(sf.site_code, sd.site_code, '?'), l.source_id, l.ni, l.numero,
       COALESCE(l.date_echeance, sf.echeance_date), COALESCE(l.attendu, sf.echeance_montant, l.montant_facture),
       l.nif, l.montant_facture, of.etat_norm, of.etat, of.montant_regle, of.date_reglement, of.reference_virement,
       of.commentaire, (l.etat_echeance = 'ANNULEE'), (l.run_id = %(run_id)s),
       EXISTS (SELECT 1 FROM opco_facture_history h WHERE h.conn_id = l.conn_id AND h.numero_facture = l.nif
               AND h.run_id = %(run_id)s AND h.etat_norm = 'REGLE')
FROM lines l
LEFT JOIN opco_facture of ON of.conn_id = l.conn_id AND of.numero_facture = l.nif
LEFT JOIN staged sf ON sf.source_id = l.source_id AND sf.numero_facture = l.nif
LEFT JOIN sites sd ON sd.source_id = l.source_id AND sd.numero_interne = l.ni
ORDER BY 1, 2, 4, 5
"""


def _num(v) -> float | None:
    return None if v is None else round(float(v), 2)


def load_lines(conn, run_id: str | None = None) -> list[CashLine]:
    """Every échéance known to the connector, as cash lines (``run_id``: flags what this run did)."""
    out = []
    with conn.cursor() as cur:
        cur.execute(LINES_SQL, {"run_id": run_id})
        for (opco, site, source_id, ni, numero, date_ech, attendu, nif, montant_facture, etat_norm, etat,
             montant_regle, date_reglement, ref, commentaire, annulee, sent_run, paid_run) in cur.fetchall():
            state = None
            if nif is not None:     # sent: the OPCO's state, "EN_COURS" until it says more (or in words we
                state = etat_norm if etat_norm in ("REGLE", "REJETE") else "EN_COURS"   # do not know)
                if etat_norm is None and etat:
                    commentaire = f"état « {etat} » de l'OPCO" + (f" : {commentaire}" if commentaire else "")
            out.append(CashLine(opco=opco, site=site or "?", source_id=source_id, numero_interne=ni,
                                echeance=int(numero) if numero is not None else 0, date_echeance=date_ech,
                                attendu=_num(attendu) or 0.0, facture=nif, montant_facture=_num(montant_facture),
                                etat_facture=state, montant_regle=_num(montant_regle), date_reglement=date_reglement,
                                reference_virement=ref, commentaire=commentaire, annulee=bool(annulee),
                                sent_this_run=bool(sent_run), paid_this_run=bool(paid_run)))
    return out
