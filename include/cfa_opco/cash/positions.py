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
