"""Where every extracted dossier of a run ended: one bucket each, counts that add up.

Each dossier staged for the run lands in exactly one bucket, decided in this order: its
quality verdict, its routing (plan), then its latest ledger row (outbox.Status) and,
once sent, what the OPCO decided. ``run_buckets`` computes them from the connector's
database; ``check_totals`` fails loudly when extracted ≠ sum of buckets; ``write_markdown``
writes the run report a CFA employee reads.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from cfa_opco.db.connect import connection

# bucket → label of the run report, in display order
BUCKETS = {
    "transmitted": "Transmis à l'OPCO",
    "refused_by_opco": "Refusés par l'OPCO à l'envoi (erreurs de contenu)",
    "quarantined": "En quarantaine (contrôle qualité)",
    "waiting": "En attente d'un autre dossier (avenant → contrat de base)",
    "needs_human_decision": "Décision humaine nécessaire (routage)",
    "not_transmissible": "Non transmissibles par l'API (portail de l'OPCO, clé refusée, modifiés après envoi)",
    "in_doubt": "En doute (réponse perdue, pas encore relus à l'OPCO)",
    "filtered": "Écartés par les paramètres du run (only_opco / only_site)",
    "dry_run": "Essai à blanc (rien envoyé)",
    "not_processed": "Non traités (tâche d'envoi non exécutée ou interrompue)",
}
# the invoices' buckets (cfa_opco.pipeline.invoicing): bucket -> label, in display order
INVOICE_BUCKETS = {
    "transmitted": "Transmises à l'OPCO",
    "to_fix": "À corriger dans l'ERP (contrôle des factures, deux factures pour une échéance)",
    "waiting_engage": "En attente de l'engagement du dossier (pas encore ENGAGE)",
    "waiting_certificat": "En attente du certificat de réalisation de l'échéance (AFDAS : refusé, en doute)",
    "no_longer_due": "Sans objet après la rupture du contrat (échéance annulée : à annuler dans l'ERP)",
    "not_transmissible": "Non transmissibles par l'API (OPCO sans route factures : portail)",
    "filtered": "Écartées par les paramètres du run (only_opco / only_site)",
    "refused": "Refusées par l'OPCO à l'envoi",
    "in_doubt": "En doute (réponse perdue, relue avant tout renvoi)",
    "dry_run": "Essai à blanc (rien envoyé)",
    "not_processed": "Non traitées (tâche d'envoi non exécutée ou interrompue)",
}
# the exchanges that follow a dossier once the OPCO holds it (not buckets: a dossier may have
# several documents, one convention, one rupture): operation -> label, and their outcomes
FOLLOWING = {"CONVENTION": "Conventions de formation", "PIECE": "Pièces justificatives", "RUPTURE": "Ruptures",
             "CERTIFICAT": "Certificats de réalisation (avant les factures AFDAS)"}
FOLLOWING_STATUSES = {"SENT": "transmises", "REJECTED": "refusées par l'OPCO",
                      "BLOCKED": "retenues (avec la raison)", "PENDING": "en doute"}
# the OPCO's decision on the transmitted ones (a breakdown of "transmitted", not a bucket)
DECISIONS = ("accepted", "refused", "pending_decision", "incomplete", "suivi_impossible")

_SQL = """
SELECT s.source_id, s.numero_interne, s.nature, s.base_numero_interne, s.change_kind,
       q.verdict, q.rule_codes, p.decision, p.reason, t.status, t.message,
       od.etat, (od.anomalies IS NOT NULL AND od.anomalies::text NOT IN ('[]', 'null')),
       od.suivi_impossible_reason
FROM staged_dossier s
LEFT JOIN quality_verdict q ON q.run_id = s.run_id AND q.source_id = s.source_id AND q.numero_interne = s.numero_interne
LEFT JOIN transmission_plan p ON p.run_id = s.run_id AND p.source_id = s.source_id
      AND p.numero_interne = s.numero_interne
LEFT JOIN LATERAL (SELECT status, message FROM transmission t
                   WHERE t.source_id = s.source_id AND t.numero_interne = s.numero_interne
                     AND t.operation = 'DOSSIER'
                     AND (t.run_id = s.run_id OR t.status IN ('SENT', 'REJECTED'))
                   ORDER BY (t.run_id = s.run_id) DESC, t.id DESC LIMIT 1) t ON true
LEFT JOIN opco_dossier od ON od.source_id = s.source_id AND od.numero_interne = s.numero_interne
WHERE s.run_id = %s
ORDER BY s.source_id, s.numero_interne
"""


def _bucket(verdict, decision, status) -> str:
    if verdict == "QUARANTINE":
        return "quarantined"
    if decision is None:
        return "not_processed"
    if decision == "NEEDS_HUMAN":
        return "needs_human_decision"
    if decision == "NOT_SERVED":
        return "not_transmissible"
    if decision == "FILTERED":
        return "filtered"
    return {"SENT": "transmitted", "REJECTED": "refused_by_opco", "PENDING": "in_doubt", "WAITING": "waiting",
            "BLOCKED": "not_transmissible", "DRY_RUN": "dry_run"}.get(status, "not_processed")


def run_buckets(connector: str, run_id: str, detail_limit: int = 50) -> dict:
    """{"staged", "forced_in", "buckets": {bucket: n}, "decisions": {...}, "details": {bucket: [...]},
    "reasons": {bucket: {reason: n}}}."""
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('quality_run') IS NOT NULL")
        quality_ran = False
        if cur.fetchone()[0]:
            cur.execute("SELECT count(*) FROM quality_run WHERE run_id = %s", (run_id,))
            quality_ran = cur.fetchone()[0] > 0
        cur.execute(_SQL, (run_id,))
        rows = cur.fetchall()
    buckets: Counter = Counter({b: 0 for b in BUCKETS})
    decisions: Counter = Counter({d: 0 for d in DECISIONS})
    details: dict[str, list] = {b: [] for b in BUCKETS}
    reasons: dict[str, Counter] = {b: Counter() for b in BUCKETS}
    forced = 0
    for (source_id, numero, nature, base, change_kind, verdict, rules, decision, plan_reason, status, message,
         etat, incomplete, impossible) in rows:
        forced += change_kind == "FORCED"
        b = _bucket(verdict, decision, status)
        buckets[b] += 1
        if b == "quarantined":
            why = ", ".join(rules or []) or "anomalies"
            for rule in rules or ["anomalies"]:
                reasons[b][rule] += 1
        elif b in ("needs_human_decision", "filtered") or (b == "not_transmissible" and decision == "NOT_SERVED"):
            why = plan_reason or ""
            reasons[b][why] += 1
        elif b == "not_processed":
            why = ("routage non fait (plan_transmission n'a pas tourné)" if decision is None
                   else "aucun envoi enregistré pour ce run")
            reasons[b][why] += 1
        else:
            why = message or ""
            if b in ("waiting", "in_doubt", "not_transmissible", "refused_by_opco"):
                reasons[b][why.split(" (")[0][:120] if b != "waiting" else why[:160]] += 1
        if b == "transmitted":
            if impossible:
                decisions["suivi_impossible"] += 1
            elif etat in ("ENGAGE", "SOLDE", "RUPTU"):
                decisions["accepted"] += 1
            elif etat == "REFUSE":
                decisions["refused"] += 1
            elif incomplete:
                decisions["incomplete"] += 1
            else:
                decisions["pending_decision"] += 1
        if b != "transmitted" and len(details[b]) < detail_limit:
            item = {"source_id": source_id, "numero_interne": numero, "raison": why}
            if b == "waiting":
                item["contrat_de_base"] = base
            details[b].append(item)
    return {"staged": len(rows), "forced_in": forced, "quality_ran": quality_ran, "buckets": dict(buckets),
            "decisions": dict(decisions), "details": {b: d for b, d in details.items() if d},
            "reasons": {b: top_reasons(r) for b, r in reasons.items() if r}}


def top_reasons(counts: Counter, limit: int = 10) -> dict[str, int]:
    """The ``limit`` most frequent reasons, ties in the reasons' order: the same run gives the
    same report whichever worker read its rows in whichever order."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


class CountsDoNotAddUp(RuntimeError):
    pass


def following_exchanges(connector: str, run_id: str) -> dict[str, dict[str, int]]:
    """{operation: {status: n}} of this run's conventions, pièces and ruptures (the ledger's)."""
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("""SELECT operation, status, count(*) FROM transmission WHERE run_id = %s
                       AND operation = ANY(%s) GROUP BY 1, 2""", (run_id, list(FOLLOWING)))
        out: dict[str, dict[str, int]] = {}
        for op, status, n in cur.fetchall():
            out.setdefault(op, {})[status] = n
    return out


def check_totals(extracted: int, result: dict) -> None:
    """extracted (+ dossiers brought in by a forced resend) = sum of the buckets, else a clear error."""
    total = sum(result["buckets"].values())
    brought_in = result["staged"] - extracted
    if total != result["staged"] or not 0 <= brought_in <= result["forced_in"]:
        parts = ", ".join(f"{b} {n}" for b, n in result["buckets"].items() if n)
        raise CountsDoNotAddUp(
            f"Les comptes du run ne tombent pas juste : {extracted} dossier(s) extrait(s) "
            f"(+ {max(0, brought_in)} ramené(s) par un renvoi forcé), {result['staged']} dans le lot du run, "
            f"{total} répartis dans les cases ({parts}). Un dossier n'est dans aucune case ou dans deux : "
            "c'est un défaut du connecteur, à signaler avec l'identifiant du run")


def invoice_lines(invoices: dict) -> list[str]:
    """The run report's « Factures » section: every invoice of the run in one bucket, then why."""
    lines = ["", "## Factures", "", f"Factures de l'ERP dans le lot du run : **{invoices['staged']}**", "",
             "| Case | Factures |", "|---|---:|"]
    for b, label in INVOICE_BUCKETS.items():
        lines.append(f"| {label} | {invoices['buckets'].get(b, 0)} |")
    lines.append(f"| **Total** | **{sum(invoices['buckets'].values())}** |")
    for b, label in INVOICE_BUCKETS.items():
        if b == "transmitted" or not invoices["buckets"].get(b):
            continue
        lines += ["", f"### {label} ({invoices['buckets'][b]})", ""]
        for reason, n in (invoices["reasons"].get(b) or {}).items():
            lines.append(f"- {n} × {reason or '(sans raison enregistrée)'}")
        det = invoices["details"].get(b) or []
        if det:
            lines += ["", "| Source | Facture | Dossier | Raison |", "|---|---|---|---|"]
            for d in det:
                lines.append(f"| {d['source_id']} | {d['numero_facture']} | {d['numero_interne']} | "
                             f"{(d['raison'] or '').replace('|', '/')} |")
    return lines


def cash_lines(cash: dict) -> list[str]:
    """The run report's « Trésorerie » section: the cash view's figures, and where it is."""
    from cfa_opco.cash.positions import SITUATIONS  # lazy: cash.positions imports nothing heavy, but run_report is imported by DAG-side code

    def eur(v: float) -> str:
        return f"{v:,.2f} €".replace(",", " ").replace(".", ",")

    r = cash["this_run"]
    lines = ["", "## Trésorerie (échéances, factures, paiements)", "",
             f"Vue trésorerie : [{cash['html']}]({cash['html']}) · classeur Excel : [{cash['excel']}]({cash['excel']})",
             "", f"Ce run : {r['factures_transmises']} facture(s) transmise(s) ({eur(r['montant_facture'])}), "
                 f"{r['paiements_recus']} paiement(s) reçu(s) ({eur(r['montant_paye'])}).", "",
             "| Cumul | Montant |", "|---|---:|",
             f"| Attendu (échéanciers) | {eur(cash['attendu'])} |", f"| Facturé | {eur(cash['facture'])} |",
             f"| Payé | {eur(cash['paye'])} |",
             f"| En retard ({cash['echeances_en_retard']} échéance(s)) | {eur(cash['en_retard'])} |", "",
             "| Échéances par situation | Nombre |", "|---|---:|"]
    for k, label in SITUATIONS.items():
        lines.append(f"| {label} | {cash['by_situation'].get(k, 0)} |")
    lines.append(f"| **Total** | **{cash['echeances']}** |")
    return lines


def write_markdown(path: Path, summary: dict, result: dict, invoices: dict | None = None) -> Path:
    """The run report (Markdown): the buckets, the decisions, then the details of what needs someone."""
    lines = [f"# Run {summary['run_id']}", "",
             f"Dossiers extraits : **{summary['extracted']}**"
             + (f" (+ {result['staged'] - summary['extracted']} ramené(s) par un renvoi forcé)"
                if result["staged"] > summary["extracted"] else ""), ""]
    if summary.get("rows_not_staged"):
        lines += [f"Lignes ERP non extraites (sans numéro de dossier lisible, ou numéro en double dans une source ; "
                  f"voir extraction_issue et le résumé d'extraction) : "
                  f"**{summary['rows_not_staged']}**", ""]
    if summary.get("failed_sources"):
        lines += [f"**Sources non lues ce run** : {', '.join(summary['failed_sources'])}", ""]
    lines += ["| Case | Dossiers |", "|---|---:|"]
    for b, label in BUCKETS.items():
        lines.append(f"| {label} | {result['buckets'].get(b, 0)} |")
    lines += [f"| **Total** | **{sum(result['buckets'].values())}** |", "",
              "Décisions de l'OPCO sur les dossiers transmis :", "",
              "| Décision | Dossiers |", "|---|---:|"]
    labels = {"accepted": "Acceptés (engagés)", "refused": "Refusés", "pending_decision": "En instruction",
              "incomplete": "Incomplets (pièces manquantes)",
              "suivi_impossible": "Suivi impossible (l'OPCO ne peut pas être lu)"}
    for d in DECISIONS:
        lines.append(f"| {labels[d]} | {result['decisions'].get(d, 0)} |")
    for b, label in BUCKETS.items():
        if b == "transmitted" or not result["buckets"].get(b):
            continue
        lines += ["", f"## {label} ({result['buckets'][b]})", ""]
        for reason, n in (result["reasons"].get(b) or {}).items():
            lines.append(f"- {n} × {reason or '(sans raison enregistrée)'}")
        det = result["details"].get(b) or []
        if det:
            lines += ["", "| Source | Dossier | Raison |", "|---|---|---|"]
            for d in det:
                extra = f" (contrat de base {d['contrat_de_base']})" if d.get("contrat_de_base") else ""
                reason = (d["raison"] or "").replace("|", "/")
                lines.append(f"| {d['source_id']} | {d['numero_interne']}{extra} | {reason} |")
    following = summary.get("following") or {}
    if following:
        lines += ["", "## Échanges qui suivent les dossiers transmis", "",
                  "| Échange | " + " | ".join(FOLLOWING_STATUSES.values()) + " |",
                  "|---|" + "---:|" * len(FOLLOWING_STATUSES)]
        for op, label in FOLLOWING.items():
            if following.get(op):
                lines.append(f"| {label} | " + " | ".join(str(following[op].get(st, 0))
                                                           for st in FOLLOWING_STATUSES) + " |")
    if invoices is not None:
        lines += invoice_lines(invoices)
    if summary.get("cash"):
        lines += cash_lines(summary["cash"])
    if summary.get("reports"):
        lines += ["", f"Rapports qualité : {summary['reports']}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
