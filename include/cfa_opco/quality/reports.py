"""Reports for quality leads, per run, in the run's folder (report_location.run_folder):

- ``index.html``            the run's summary and links (the page the Airflow plugin opens)
- ``rapport.html``          all sites: charts (anomalies by rule, by site, trend over recent
                            runs, inline SVG: works offline) and the records to fix
- ``sites/<site>.html``     the same, one page per CFA site
- ``a_corriger.xlsx``       records to fix (grouped by source record, sorted by the number
                            of dossiers each blocks) + the per-dossier anomalies
- ``a_corriger.csv``        records to fix (same rows as the first sheet)
- ``anomalies.csv``         one row per dossier and anomaly
- ``factures_a_corriger.csv`` the run's invoices to fix (suite cfa_opco_facture), and per site
  ``sites/<site>_factures_a_corriger.csv`` next to the site's page and its "Factures à corriger"
- ``data_docs/index.html``  the Great Expectations Data Docs of the run (styled from local
                            copies of their CSS/JS: :mod:`cfa_opco.quality.static`)

The gate adds ``quality.json`` (its summary); the run's last tasks add ``summary.json``,
``run_report.md`` and ``attention.json`` (:mod:`cfa_opco.report_runs`).

Personal data is masked upstream (NIR, birth dates): the reports only show what the
anomalies carry.
"""
from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from cfa_opco.report_location import site_page

GROUP_COLUMNS = ["source_id", "record_type", "record_ref", "record_label", "rule_code", "severity", "field",
                 "valeur", "message"]
RECORD_TYPE_LABELS = {"entreprise": "Entreprise", "apprenant": "Apprenant", "session": "Session de formation",
                      "etablissement": "Établissement CFA", "contrat": "Contrat / avenant",
                      "maitre1": "Maître d'apprentissage", "maitre2": "Maître d'apprentissage"}


def records_to_fix(anomalies: pd.DataFrame) -> pd.DataFrame:
    """One row per source record and anomaly, with the dossiers it blocks, most blocking first."""
    if anomalies is None or not len(anomalies):
        return pd.DataFrame(columns=["source_id", "type_fiche", *GROUP_COLUMNS[1:], "dossiers", "numeros", "sites"])
    a = anomalies.fillna({"valeur": "", "record_label": "", "site_code": "?"})
    g = a.groupby(GROUP_COLUMNS, sort=False, dropna=False).agg(
        dossiers=("numero_interne", "nunique"),
        numeros=("numero_interne", lambda s: ", ".join(sorted(set(s))[:30]) + (" …" if s.nunique() > 30 else "")),
        sites=("site_code", lambda s: ", ".join(sorted(set(s))))).reset_index()
    g["_err"] = g["severity"].eq("error")
    g = g.sort_values(["_err", "dossiers", "record_type", "record_ref"], ascending=[False, False, True, True],
                      kind="stable").drop(columns="_err")
    g.insert(1, "type_fiche", g["record_type"].map(RECORD_TYPE_LABELS).fillna(g["record_type"]))
    return g.reset_index(drop=True)


# -- inline SVG charts (no JavaScript, no CDN) ---------------------------------------------
def svg_bars(items: list[tuple[str, float]], *, color: str = "#c0392b", width: int = 640, title: str = "") -> str:
    if not items:
        return "<p class='muted'>Aucune anomalie.</p>"
    bar_h, gap, label_w = 20, 6, 250
    h = len(items) * (bar_h + gap) + 30
    vmax = max(v for _, v in items) or 1
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{h}' role='img' "
             f"aria-label='{html.escape(title)}'>"]
    for i, (label, v) in enumerate(items):
        y = 20 + i * (bar_h + gap)
        w = max(1, (width - label_w - 60) * v / vmax)
        parts.append(f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end' font-size='12'>{html.escape(str(label))}</text>"
                     f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h}' fill='{color}'/>"
                     f"<text x='{label_w + w + 4:.1f}' y='{y + 14}' font-size='12'>{int(v)}</text>")
    parts.append(f"<text x='0' y='12' font-size='13' font-weight='bold'>{html.escape(title)}</text></svg>")
    return "".join(parts)


def svg_trend(points: list[tuple[str, int, int]], *, width: int = 640, height: int = 220) -> str:
    """Quarantined and checked dossiers over recent runs (bars: checked, red: quarantined)."""
    if not points:
        return "<p class='muted'>Pas encore d'historique.</p>"
    left, bottom, top = 40, 50, 25
    n = len(points)
    step = (width - left - 10) / n
    vmax = max(max(c, 1) for _, c, _ in points)
    ph = height - bottom - top
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             "aria-label='Tendance'>",
             "<text x='0' y='14' font-size='13' font-weight='bold'>Dossiers contrôlés (gris) et en quarantaine "
             "(rouge), derniers passages</text>"]
    for i, (label, checked, quarantined) in enumerate(points):
        x = left + i * step
        hc = ph * checked / vmax
        hq = ph * quarantined / vmax
        bw = max(4, step * 0.6)
        parts.append(f"<rect x='{x:.1f}' y='{top + ph - hc:.1f}' width='{bw:.1f}' height='{hc:.1f}' fill='#bdc3c7'/>"
                     f"<rect x='{x:.1f}' y='{top + ph - hq:.1f}' width='{bw:.1f}' height='{hq:.1f}' fill='#c0392b'/>"
                     f"<text x='{x:.1f}' y='{top + ph - hc - 3:.1f}' font-size='10'>{quarantined}/{checked}</text>"
                     f"<text x='{x:.1f}' y='{height - bottom + 14}' font-size='9' "
                     f"transform='rotate(25 {x:.1f} {height - bottom + 14})'>{html.escape(label[:22])}</text>")
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #ddd;padding:4px 6px;
vertical-align:top;text-align:left}th{background:#f4f4f4}tr.warning td{color:#7f6000}
.kpi{display:inline-block;margin:0 18px 12px 0;padding:10px 14px;border:1px solid #ddd;border-radius:6px}
.kpi b{display:block;font-size:1.5em}.muted{color:#777}.err{color:#c0392b}a{color:#1f5fa8}
.charts{display:flex;flex-wrap:wrap;gap:24px}
td.num{text-align:right}tr.attention td{background:#fff4e5}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _kpis(items: list[tuple[str, object, str]]) -> str:
    return "".join(f"<div class='kpi {cls}'><b>{html.escape(str(v))}</b>{html.escape(k)}</div>" for k, v, cls in items)


def _fix_table(fix: pd.DataFrame, limit: int = 2000) -> str:
    if not len(fix):
        return "<p>Aucun enregistrement à corriger.</p>"
    rows = []
    for r in fix.head(limit).itertuples(index=False):
        rows.append(f"<tr class='{r.severity}'><td>{r.dossiers}</td><td>{html.escape(r.type_fiche)}</td>"
                    f"<td>{html.escape(str(r.record_label))}<br><span class='muted'>{html.escape(r.source_id)} · "
                    f"{html.escape(str(r.record_ref))}</span></td><td>{html.escape(r.rule_code)}<br>"
                    f"<span class='muted'>{'bloquant' if r.severity == 'error' else 'avertissement'}</span></td>"
                    f"<td>{html.escape(r.field)}</td><td>{html.escape(str(r.valeur))}</td>"
                    f"<td>{html.escape(r.message)}</td><td>{html.escape(r.numeros)}</td></tr>")
    more = f"<p class='muted'>… {len(fix) - limit} lignes de plus dans le fichier Excel.</p>" if len(fix) > limit else ""
    return ("<table><thead><tr><th>Dossiers bloqués</th><th>Fiche</th><th>Enregistrement</th><th>Règle</th>"
            "<th>Champ</th><th>Valeur</th><th>À corriger</th><th>Dossiers</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>" + more)


def _charts(anomalies: pd.DataFrame, verdicts: pd.DataFrame, trend: list) -> str:
    by_rule = []
    by_site = []
    if len(anomalies):
        br = anomalies.groupby("rule_code")["numero_interne"].nunique().sort_values(ascending=False)
        by_rule = list(br.head(20).items())
    q = verdicts[verdicts["verdict"] != "TRANSMIT"]
    if len(q):
        bs = q.groupby(q["site_code"].fillna("?")).size().sort_values(ascending=False)
        by_site = list(bs.items())
    return ("<div class='charts'>" + svg_bars(by_rule, title="Dossiers concernés par règle")
            + svg_bars(by_site, color="#8e44ad", title="Dossiers en quarantaine (ou forcés) par site")
            + svg_trend(trend) + "</div>")


def _trend(conn, run_id: str, site: str | None = None, n: int = 12) -> list[tuple[str, int, int]]:
    if conn is None:
        return []
    with conn.cursor() as cur:
        cur.execute("""SELECT q.run_id, count(v.*), count(v.*) FILTER (WHERE v.verdict = 'QUARANTINE')
                       FROM quality_run q JOIN quality_verdict v USING (run_id)
                       WHERE (%s::text IS NULL OR v.site_code = %s)
                         AND q.started_at <= (SELECT started_at FROM quality_run WHERE run_id = %s)
                       GROUP BY q.run_id, q.started_at ORDER BY q.started_at DESC LIMIT %s""",
                    (site, site, run_id, n))
        return [(r[0], int(r[1]), int(r[2])) for r in reversed(cur.fetchall())]


def header(sheet, labels) -> None:
    """A bold first row in a write-only openpyxl sheet."""
    cells = []
    for lab in labels:
        c = WriteOnlyCell(sheet, value=lab)
        c.font = Font(bold=True)
        cells.append(c)
    sheet.append(cells)


def write_excel(path: Path, fix: pd.DataFrame, anomalies: pd.DataFrame, summary_rows: list[tuple]) -> None:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("À corriger")
    cols = [("dossiers", "Dossiers bloqués"), ("type_fiche", "Fiche"), ("record_label", "Enregistrement"),
            ("source_id", "ERP"), ("record_ref", "Référence ERP"), ("rule_code", "Règle"),
            ("severity", "Gravité"), ("field", "Champ"), ("valeur", "Valeur"), ("message", "À corriger"),
            ("sites", "Sites"), ("numeros", "Dossiers")]

    header(ws, [c[1] for c in cols])
    for row in fix[[c[0] for c in cols]].itertuples(index=False):
        ws.append(list(row))
    ws2 = wb.create_sheet("Dossiers")
    dcols = ["source_id", "numero_interne", "site_code", "rule_code", "severity", "field", "valeur", "message",
             "record_type", "record_ref"]
    header(ws2, dcols)
    if len(anomalies):
        for row in anomalies[dcols].itertuples(index=False):
            ws2.append(list(row))
    ws3 = wb.create_sheet("Synthèse")
    for r in summary_rows:
        ws3.append(list(r))
    wb.save(path)


INVOICE_FIX_COLUMNS = {"source_id": "source", "site_code": "site", "numero_facture": "facture",
                       "numero_interne": "dossier", "rule_code": "règle", "field": "champ", "valeur": "valeur",
                       "message": "à corriger", "ligne": "ligne ERP"}


def invoices_to_fix(invoice_anomalies: pd.DataFrame | None, site: str | None = None) -> pd.DataFrame:
    """The invoices to fix (one row per invoice and anomaly, French headers), of a site or all."""
    a = invoice_anomalies if invoice_anomalies is not None else pd.DataFrame(columns=list(INVOICE_FIX_COLUMNS))
    if site is not None and len(a):
        a = a[a["site_code"].fillna("?") == site]
    a = a[[c for c in INVOICE_FIX_COLUMNS]].sort_values(["source_id", "numero_facture", "rule_code"], kind="stable")
    return a.rename(columns=INVOICE_FIX_COLUMNS).reset_index(drop=True)


def _invoice_table(fix: pd.DataFrame, csv_name: str, limit: int = 2000) -> str:
    head = (f"<h2>Factures à corriger</h2><p>Une ligne par facture et par anomalie : une facture à corriger "
            f"n'est pas transmise à l'OPCO tant que l'ERP n'est pas corrigé (son dossier, lui, n'est pas "
            f"bloqué). <a href='{html.escape(csv_name)}'>CSV</a></p>")
    if not len(fix):
        return head + "<p>Aucune facture à corriger.</p>"
    rows = "".join(f"<tr class='error'><td>{html.escape(str(r[2]))}<br><span class='muted'>{html.escape(str(r[0]))}"
                   f" · ligne {html.escape(str(r[8]))}</span></td><td>{html.escape(str(r[3]))}</td>"
                   f"<td>{html.escape(str(r[4]))}</td><td>{html.escape(str(r[6]))}</td><td>{html.escape(str(r[7]))}</td></tr>"
                   for r in fix.head(limit).itertuples(index=False))
    return (head + "<table><thead><tr><th>Facture</th><th>Dossier</th><th>Règle</th><th>Valeur</th>"
            "<th>À corriger</th></tr></thead><tbody>" + rows + "</tbody></table>")


def write_run_reports(conn, run_id: str, out_dir: Path, *, anomalies: pd.DataFrame, verdicts: pd.DataFrame,
                      data_docs: Path | None = None, invoice_anomalies: pd.DataFrame | None = None) -> Path:
    """Write the run's reports into ``out_dir``; return the index page's path."""
    out_dir = Path(out_dir)
    (out_dir / "sites").mkdir(parents=True, exist_ok=True)
    invoices_fix = invoices_to_fix(invoice_anomalies)
    invoices_fix.to_csv(out_dir / "factures_a_corriger.csv", index=False, sep=";", encoding="utf-8-sig")
    anomalies = anomalies if anomalies is not None else pd.DataFrame(columns=["numero_interne"])
    fix = records_to_fix(anomalies)
    now = dt.datetime.now().strftime("%d/%m/%Y %H:%M")
    vc = verdicts["verdict"].value_counts()
    counts = {"checked": len(verdicts), "passed": int(vc.get("TRANSMIT", 0)),
              "quarantined": int(vc.get("QUARANTINE", 0)), "forced": int(vc.get("FORCED", 0)),
              "warnings": int((verdicts["warnings"] > 0).sum())}
    kpis = _kpis([("dossiers contrôlés", counts["checked"], ""), ("à transmettre", counts["passed"], ""),
                  ("en quarantaine", counts["quarantined"], "err"), ("forcés", counts["forced"], ""),
                  ("avec avertissement", counts["warnings"], ""),
                  ("enregistrements à corriger", int((fix["severity"] == "error").sum()) if len(fix) else 0, "err")])

    # CSV / Excel
    fix.to_csv(out_dir / "a_corriger.csv", index=False, sep=";", encoding="utf-8-sig")
    anomalies.to_csv(out_dir / "anomalies.csv", index=False, sep=";", encoding="utf-8-sig")
    write_excel(out_dir / "a_corriger.xlsx", fix, anomalies,
                [("Passage", run_id), ("Généré le", now), *[(k, v) for k, v in counts.items()]])

    # per-site pages
    site_links = []
    sites = sorted(set(verdicts["site_code"].fillna("?").unique())
                   | set(invoices_fix["site"].fillna("?").unique() if len(invoices_fix) else ()))
    for site in sites:
        v_site = verdicts[verdicts["site_code"].fillna("?") == site]
        a_site = anomalies[anomalies["site_code"].fillna("?") == site] if len(anomalies) else anomalies
        f_site = records_to_fix(a_site)
        q = int((v_site["verdict"] == "QUARANTINE").sum())
        body = (f"<p><a href='../index.html'>← passage {html.escape(run_id)}</a></p>"
                f"<h1>Qualité des dossiers — site {html.escape(site)}</h1><p class='muted'>Passage "
                f"{html.escape(run_id)}, généré le {now}</p>"
                + _kpis([("dossiers contrôlés", len(v_site), ""), ("en quarantaine", q, "err"),
                         ("forcés", int((v_site["verdict"] == "FORCED").sum()), "")])
                + _charts(a_site, v_site, _trend(conn, run_id, site))
                + "<h2>Enregistrements à corriger dans l'ERP</h2>"
                  "<p>Une ligne par fiche (entreprise, apprenant, session, contrat…) et par anomalie, "
                  "triées par nombre de dossiers bloqués : corriger la fiche débloque tous ses dossiers au "
                  "prochain passage.</p>" + _fix_table(f_site))
        name = site_page(site)
        inv_csv = name[:-len(".html")] + "_factures_a_corriger.csv"
        inv_site = invoices_to_fix(invoice_anomalies, site)
        inv_site.to_csv(out_dir / inv_csv, index=False, sep=";", encoding="utf-8-sig")
        body += _invoice_table(inv_site, Path(inv_csv).name)
        (out_dir / name).write_text(_page(f"Qualité — {site}", body), encoding="utf-8")
        site_links.append((site, name, len(v_site), q))

    # whole run
    body = (f"<p><a href='index.html'>← sommaire</a></p><h1>Qualité des dossiers — tous sites</h1>"
            f"<p class='muted'>Passage {html.escape(run_id)}, généré le {now}</p>" + kpis
            + _charts(anomalies, verdicts, _trend(conn, run_id))
            + "<h2>Enregistrements à corriger dans l'ERP</h2>" + _fix_table(fix)
            + _invoice_table(invoices_fix, "factures_a_corriger.csv"))
    (out_dir / "rapport.html").write_text(_page("Qualité — tous sites", body), encoding="utf-8")

    docs_link = ""
    if data_docs is not None and Path(data_docs).exists():
        rel = Path(data_docs).resolve().relative_to(out_dir.resolve()).as_posix()
        docs_link = f"<li><a href='{rel}'>Great Expectations Data Docs</a> (suites et validations du passage)</li>"
    site_rows = "".join(f"<tr><td><a href='{n}'>{html.escape(s)}</a></td><td>{c}</td><td>{q}</td></tr>"
                        for s, n, c, q in site_links)
    index = ("<p><a href='../index.html'>← tous les passages</a></p>"
             f"<h1>Contrôle qualité — passage {html.escape(run_id)}</h1><p class='muted'>Généré le {now}</p>"
             + kpis + "<ul><li><a href='rapport.html'>Rapport tous sites</a> (graphiques et fiches à corriger)</li>"
             "<li><a href='a_corriger.xlsx'>Fiches à corriger (Excel)</a> · <a href='a_corriger.csv'>CSV</a></li>"
             "<li><a href='anomalies.csv'>Anomalies par dossier (CSV)</a></li>"
             f"<li><a href='factures_a_corriger.csv'>Factures à corriger (CSV)</a> : {len(invoices_fix)} anomalie(s) "
             "de factures</li>" + docs_link
             + "<li><a href='run_report.md'>Bilan du passage</a> (transmissions, décisions des OPCO, dossiers "
               "bloqués : écrit à la fin du run par la tâche run_summary)</li>"
               "<li><a href='tresorerie.html'>Trésorerie</a> (échéances, factures, paiements des OPCO, retards, "
               "rejets ; <a href='tresorerie.xlsx'>Excel</a> — écrite à la fin du run)</li></ul>"
             "<h2>Par site</h2><table><thead><tr><th>Site</th><th>Dossiers</th><th>En quarantaine</th></tr></thead>"
             f"<tbody>{site_rows}</tbody></table>")
    path = out_dir / "index.html"
    path.write_text(_page(f"Qualité — {run_id}", index), encoding="utf-8")
    if data_docs is not None and Path(data_docs).exists():
        from cfa_opco.quality.static import localize_data_docs  # lazy: vendored assets, only when Data Docs were built

        localize_data_docs(Path(data_docs).parent)
    return path
