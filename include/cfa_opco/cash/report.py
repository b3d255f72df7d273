"""The cash view's files: ``tresorerie.html`` (same look as the quality report, a chart of
expected vs paid per month, tables per OPCO / site / month, overdue oldest first, rejected
invoices with the OPCO's reason) and ``tresorerie.xlsx`` (the same tables, one sheet each,
plus every échéance line).
"""
from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from openpyxl import Workbook

from cfa_opco.cash.positions import SITUATIONS, CashLine, CashView, Totals, build, load_lines
from cfa_opco.providers.opco.norm import OPCO_NAMES
from cfa_opco.quality.reports import _kpis, _page, header

HTML_NAME = "tresorerie.html"
EXCEL_NAME = "tresorerie.xlsx"


def opco_name(code: str) -> str:
    return OPCO_NAMES.get((code or "").lower(), (code or "?").upper())


def euros(v: float) -> str:
    return f"{v:,.2f} €".replace(",", "\u202f").replace(".", ",")


def svg_expected_vs_paid(by_month: dict[str, Totals], *, width: int = 760, height: int = 260) -> str:
    months = [m for m in by_month if m != "?"][-24:]
    if not months:
        return "<p class='muted'>Pas encore d'échéancier lu auprès des OPCO.</p>"
    left, bottom, top = 70, 40, 30
    vmax = max(max(by_month[m].attendu, by_month[m].paye) for m in months) or 1.0
    step = (width - left - 10) / len(months)
    bw = max(3.0, step * 0.38)
    ph = height - bottom - top
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             "aria-label='Attendu et payé par mois'>",
             "<text x='0' y='14' font-size='13' font-weight='bold'>Attendu (gris) et payé (vert) par mois "
             "d'échéance</text>",
             f"<text x='{left - 6}' y='{top + 10}' text-anchor='end' font-size='10'>{html.escape(euros(vmax))}</text>"]
    for i, m in enumerate(months):
        t = by_month[m]
        x = left + i * step
        ha, hp = ph * t.attendu / vmax, ph * t.paye / vmax
        parts.append(f"<rect x='{x:.1f}' y='{top + ph - ha:.1f}' width='{bw:.1f}' height='{ha:.1f}' fill='#bdc3c7'>"
                     f"<title>{m} attendu {html.escape(euros(t.attendu))}</title></rect>"
                     f"<rect x='{x + bw:.1f}' y='{top + ph - hp:.1f}' width='{bw:.1f}' height='{hp:.1f}' fill='#27ae60'>"
                     f"<title>{m} payé {html.escape(euros(t.paye))}</title></rect>"
                     f"<text x='{x:.1f}' y='{height - bottom + 14}' font-size='9' "
                     f"transform='rotate(30 {x:.1f} {height - bottom + 14})'>{m}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _totals_table(rows: list[tuple[list[str], Totals]], heads: list[str]) -> str:
    if not rows:
        return "<p class='muted'>Aucune échéance.</p>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        + f"<td class='num'>{euros(t.attendu)}</td><td class='num'>{euros(t.facture)}</td>"
          f"<td class='num'>{euros(t.paye)}</td><td class='num'>{t.n_retard}</td>"
          f"<td class='num'>{euros(t.en_retard)}</td><td class='num'>{t.n_rejete}</td></tr>"
        for cells, t in rows)
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in heads)
            + "<th>Attendu</th><th>Facturé</th><th>Payé</th><th>Échéances en retard</th><th>Montant en retard</th>"
              "<th>Factures rejetées</th></tr></thead><tbody>" + body + "</tbody></table>")


def _line_cells(ln: CashLine, today) -> list:
    late = ln.overdue_days(today)
    return [opco_name(ln.opco), ln.site, ln.numero_interne, ln.echeance,
            ln.date_echeance.isoformat() if ln.date_echeance else "", round(ln.attendu, 2),
            ln.facture or "", round(ln.facture_montant, 2), round(ln.paye, 2),
            SITUATIONS[ln.situation], "" if late is None else late, ln.commentaire or "",
            ln.reference_virement or "", ln.date_reglement.isoformat() if ln.date_reglement else ""]


LINE_HEADS = ["OPCO", "Site", "Dossier", "Échéance", "Date d'échéance", "Attendu", "Facture", "Facturé", "Payé",
              "Situation", "Retard (jours)", "Commentaire de l'OPCO", "Référence du virement", "Date de règlement"]


def _lines_table(lines: list[CashLine], today, limit: int = 500) -> str:
    if not lines:
        return "<p>Aucune.</p>"
    rows = "".join("<tr>" + "".join(
        f"<td class='num'>{html.escape(euros(c))}</td>" if isinstance(c, float)
        else f"<td>{html.escape(str(c))}</td>" for c in _line_cells(ln, today)) + "</tr>" for ln in lines[:limit])
    more = f"<p class='muted'>… {len(lines) - limit} de plus dans le fichier Excel.</p>" if len(lines) > limit else ""
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in LINE_HEADS) + "</tr></thead><tbody>"
            + rows + "</tbody></table>" + more)


def write_html(path: Path, view: CashView, *, run_id: str | None, generated: str) -> None:
    t = view.total
    r = view.this_run
    back = (f"<a href='index.html'>← passage {html.escape(run_id)}</a>" if run_id
            else "<a href='../index.html'>← tous les passages</a>")
    body = (f"<p>{back}</p>"
            "<h1>Trésorerie — échéances, factures et paiements des OPCO</h1>"
            f"<p class='muted'>Cumul de tous les passages, à la date du {view.today.strftime('%d/%m/%Y')} "
            f"(généré le {generated}). <a href='{EXCEL_NAME}'>Classeur Excel</a></p>"
            + _kpis([("attendu (échéanciers)", euros(t.attendu), ""), ("facturé", euros(t.facture), ""),
                     ("payé", euros(t.paye), ""), ("en retard", euros(t.en_retard), "err"),
                     ("échéances en retard", t.n_retard, "err"), ("factures rejetées", t.n_rejete, "err")])
            + ("<h2>Ce passage</h2>"
               + _kpis([("factures transmises", r["factures_transmises"], ""),
                        ("montant facturé", euros(r["montant_facture"]), ""),
                        ("paiements reçus", r["paiements_recus"], ""), ("montant payé", euros(r["montant_paye"]), "")])
               if run_id else "")
            + "<div class='charts'>" + svg_expected_vs_paid(view.by_month) + "</div>"
            + "<h2>Échéances par situation</h2><table><thead><tr><th>Situation</th><th>Échéances</th></tr></thead><tbody>"
            + "".join(f"<tr><td>{lab}</td><td class='num'>{t.by_situation[k]}</td></tr>" for k, lab in SITUATIONS.items())
            + f"<tr><th>Total</th><th class='num'>{t.n_echeances}</th></tr></tbody></table>"
            + "<h2>Par OPCO</h2>" + _totals_table([([opco_name(o)], x) for o, x in view.by_opco.items()], ["OPCO"])
            + "<h2>Par site</h2>" + _totals_table([([s], x) for s, x in view.by_site.items()], ["Site"])
            + "<h2>Par OPCO, site et mois d'échéance</h2>"
            + _totals_table([([opco_name(o), s, m], x) for (o, s, m), x in view.by_key.items()],
                            ["OPCO", "Site", "Mois"])
            + "<h2>En retard (les plus anciennes d'abord)</h2><p>Échéances passées dont l'argent n'est pas (entièrement) "
              "arrivé : à facturer, facture en attente, rejetée ou payée en partie.</p>"
            + _lines_table(view.overdue, view.today)
            + "<h2>Factures rejetées, avec la raison donnée par l'OPCO</h2>" + _lines_table(view.rejected, view.today)
            + "<h2>Paiements partiels</h2>" + _lines_table(view.partly_paid, view.today))
    Path(path).write_text(_page("Trésorerie", body), encoding="utf-8")


def write_excel(path: Path, view: CashView, *, run_id: str | None, generated: str) -> None:
    wb = Workbook(write_only=True)

    def sheet(title: str, heads: list[str], rows):
        ws = wb.create_sheet(title)
        header(ws, heads)
        for row in rows:
            ws.append(list(row))

    money = ["Attendu", "Facturé", "Payé", "Échéances en retard", "Montant en retard", "Factures rejetées"]

    def tot(t: Totals) -> list:
        return [round(t.attendu, 2), round(t.facture, 2), round(t.paye, 2), t.n_retard, round(t.en_retard, 2),
                t.n_rejete]

    sheet("Synthèse", ["OPCO", "Site", "Mois"] + money,
          [[opco_name(o), s, m] + tot(x) for (o, s, m), x in view.by_key.items()])
    sheet("Par OPCO", ["OPCO"] + money, [[opco_name(o)] + tot(x) for o, x in view.by_opco.items()])
    sheet("Par mois", ["Mois"] + money, [[m] + tot(x) for m, x in view.by_month.items()])
    sheet("En retard", LINE_HEADS, (_line_cells(ln, view.today) for ln in view.overdue))
    sheet("Rejetées", LINE_HEADS, (_line_cells(ln, view.today) for ln in view.rejected))
    sheet("Échéances", LINE_HEADS, (_line_cells(ln, view.today) for ln in view.lines))
    sheet("Passage", ["", ""], [("Passage", run_id or "cumul de tous les passages"), ("Généré le", generated), ("À la date du", view.today.isoformat()),
                                *[(k, v) for k, v in view.this_run.items()]])
    wb.save(path)


def write_cash_view(conn, run_id: str | None, out_dir: Path, today=None) -> dict:
    """Build the cash view from the connector's database and write both files into ``out_dir``
    (a run's report folder; the reports root's ``tresorerie/`` when ``run_id`` is None: the
    cumulative view the follow-up DAG refreshes); returns the small summary kept in the run
    summary (counts and amounts, no learner)."""
    view = build(load_lines(conn, run_id), today=today)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = dt.datetime.now().strftime("%d/%m/%Y %H:%M")
    write_html(out_dir / HTML_NAME, view, run_id=run_id, generated=generated)
    write_excel(out_dir / EXCEL_NAME, view, run_id=run_id, generated=generated)
    t = view.total
    return {"echeances": t.n_echeances, "by_situation": dict(t.by_situation), "attendu": round(t.attendu, 2),
            "facture": round(t.facture, 2), "paye": round(t.paye, 2), "en_retard": round(t.en_retard, 2),
            "echeances_en_retard": t.n_retard, "factures_rejetees": t.n_rejete,
            "this_run": {k: round(v, 2) if isinstance(v, float) else v for k, v in view.this_run.items()},
            "html": HTML_NAME, "excel": EXCEL_NAME}
