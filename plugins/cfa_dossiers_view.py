"""Airflow 3 UI plugin: the "Dossiers OPCO" view, what operators act on, inside the Airflow UI.

- a FastAPI sub-application mounted at ``/cfa-dossiers`` (``fastapi_apps``):
  ``/`` counts by situation per OPCO and per site (today and cumulative) and the 14-day trend;
  ``/listes/<kind>`` the lists to act on (refused, incomplete, needs a human decision, in
  doubt, not transmissible, quarantined, waiting), filterable by OPCO/site, paged on the
  server, exported in CSV (streamed) or Excel (capped); ``/dossiers/<source>/<numero>`` a
  dossier's whole history, its proofs, the proof bundle (zip) and how to resend it;
  ``/cles`` every OPCO key (SIRET or SIREN) with its expiry and last successful call;
- an ``external_views`` entry "Dossiers OPCO" in the navigation menu.

Every route requires an authenticated Airflow user (the UI's JWT cookie or a bearer token).
All SQL is in cfa_opco.ui.dossiers (read-only transactions on the connector database);
nothing heavy is imported at load time (openpyxl only for an Excel export).
"""
from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import zipfile
from urllib.parse import quote, urlencode

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

URL_PREFIX = "/cfa-dossiers"
DAILY_DAG_ID = "cfa_opco_daily"
PER_PAGE = 50
EXCEL_MAX_ROWS = 50_000      # above: the Excel file holds the first rows and says so; the CSV has them all

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px 28px;color:#1a202c;font-size:14px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:22px 0 8px}
nav.top a{margin-right:14px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d2d6dc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.today{color:#2b6cb0;font-size:12px}.muted{color:#718096}.alert td{background:#fde2e1}.alert .days{color:#c53030;font-weight:bold}
.ok{color:#276749}.bad{color:#c53030;font-weight:bold}
pre{background:#f7fafc;border:1px solid #d2d6dc;padding:8px;white-space:pre-wrap}
form.filters{margin:8px 0}form.filters select{margin-right:8px}
.pager a,.pager span{margin-right:10px}.badge{border:1px solid #a0aec0;border-radius:3px;padding:0 4px;font-size:12px}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _when(v) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.datetime):
        return v.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _page(title: str, body: str, base: str) -> HTMLResponse:
    nav = (f"<nav class='top'><a href='{base}/'>Vue d'ensemble</a><a href='{base}/listes/refused'>Listes à traiter</a>"
           f"<a href='{base}/cles'>Clés API</a></nav>")
    return HTMLResponse(f"<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>{_e(title)}</title>"
                        f"<style>{_CSS}</style></head><body>{nav}<h1>{_e(title)}</h1>{body}</body></html>")


def _sparkline(values: list[int], width: int = 140, height: int = 24) -> str:
    """A small inline SVG polyline (no external asset)."""
    if not values:
        return ""
    top = max(values) or 1
    step = width / max(1, len(values) - 1)
    pts = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))
    return (f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
            f"aria-label='tendance'><polyline fill='none' stroke='#2b6cb0' stroke-width='1.5' points='{pts}'/></svg>")


def configured_key_ids() -> list[str]:
    """The OPCO connections Airflow holds (metadata database, AIRFLOW_CONN_OPCO_* variables),
    so that a key never used yet is listed too. The API server reads its metadata database;
    a connection only in a secrets backend is listed once a task has used or checked it."""
    from cfa_opco.providers.opco.connections import env_connection_ids   # lazy: only the keys page needs it
    from cfa_opco.providers.opco.norm import CONN_TYPE, parse_conn_id    # lazy: idem

    ids = env_connection_ids()
    try:
        from airflow.models import Connection              # lazy: the API server's metadata DB
        from airflow.utils.session import create_session   # lazy: idem
        from sqlalchemy import select                       # lazy: idem

        with create_session() as session:
            ids.update(session.scalars(select(Connection.conn_id).where(Connection.conn_type == CONN_TYPE)))
    except Exception:          # no metadata database here (a test client): the ledger's keys only
        pass
    return sorted(i for i in ids if parse_conn_id(i)[0])


def _warning_days() -> int:
    """Variable cfa_opco_key_expiry_warning_days (default 30), as the follow-up DAG reads it."""
    try:
        from airflow.models import Variable

        return int(Variable.get("cfa_opco_key_expiry_warning_days", default_var=30))
    except Exception:
        return 30


def create_app(authenticated: bool = True, connector: str | None = None):
    """``connector``: a DSN or connection id (default: connection ``cfa_connector``, else the
    project's connector DSN)."""
    deps = []
    if authenticated:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        deps = [Depends(requires_authenticated())]

    app = FastAPI(title="CFA OPCO — dossiers", dependencies=deps)
    resolved: dict = {}

    def target() -> str:
        """The connector database: ``connector``, else the Airflow connection cfa_connector
        (kept once read), else the project's DSN (looked up again at the next request, so a
        connection created later is taken)."""
        if connector:
            return connector
        if "dsn" not in resolved:
            from cfa_opco.ui import dossiers as q

            dsn, from_connection = q.resolve_target()
            if not from_connection:
                return dsn
            resolved["dsn"] = dsn
        return resolved["dsn"]

    def base(request: Request) -> str:
        return request.scope.get("root_path", "")

    def q_():
        from cfa_opco.ui import dossiers as q

        return q

    # ---- home ------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        q = q_()
        from cfa_opco.pipeline.run_report import BUCKETS, DECISIONS

        b = base(request)
        ov = q.overview(target())
        tot = ov["totals"]
        cols = [k for k in BUCKETS if k in tot["buckets"]]
        dcols = [d for d in DECISIONS if d in tot["decisions"]]
        list_of = {"quarantined": "quarantined", "needs_human_decision": "needs_human_decision",
                   "in_doubt": "in_doubt", "not_transmissible": "not_transmissible", "waiting": "waiting",
                   "refused_by_opco": "refused"}
        dlist = {"refused": "refused", "incomplete": "incomplete"}

        def cell(row: dict, key: str, decision: bool = False) -> str:
            n, today = (row["decisions"] if decision else row["buckets"]).get(key, [0, 0])
            return f"<td class='n'>{n}" + (f" <span class='today'>+{today}</span>" if today else "") + "</td>"

        def head(first: str) -> str:
            hs = "".join(f"<th>{_e(BUCKETS[c])}</th>" for c in cols)
            hs += "".join(f"<th>{_e(q.DECISION_LABELS[d])}</th>" for d in dcols)
            return f"<tr><th>{first}</th><th>Total</th>{hs}</tr>"

        def table(rows: dict, first: str, label, param: str) -> str:
            out = [head(first)]
            for key, row in rows.items():
                link = f"?{param}={quote(key or '-')}"
                name = _e(label(key))
                out.append(f"<tr><td>{name}</td><td class='n'>{row['total']}"
                           + (f" <span class='today'>+{row['today']}</span>" if row["today"] else "") + "</td>"
                           + "".join(cell(row, c).replace("<td class='n'>", f"<td class='n'><a href='{b}/listes/"
                                                          f"{list_of[c]}{link}'>", 1).replace("</td>", "</a></td>", 1)
                                     if c in list_of else cell(row, c) for c in cols)
                           + "".join(cell(row, d, True).replace("<td class='n'>", f"<td class='n'><a href='{b}/listes/"
                                                                f"{dlist[d]}{link}'>", 1).replace("</td>", "</a></td>", 1)
                                     if d in dlist else cell(row, d, True) for d in dcols)
                           + "</tr>")
            return "<table>" + "".join(out) + "</table>"

        totals = {"": tot}
        opco_name = lambda k: q.opco_label(k) if k else "Non routés (OPCO non déterminé)"  # noqa: E731
        site_name = lambda k: k or "Site inconnu"  # noqa: E731
        trend = ov["trend"]
        trend_rows = "".join(
            f"<tr><td>{_e(label)}</td><td>{_sparkline([d[key] for d in trend])}</td>"
            + "".join(f"<td class='n'>{d[key]}</td>" for d in trend) + "</tr>"
            for key, label in q.TREND_SERIES.items())
        trend_head = "".join(f"<th>{d['day'].strftime('%d/%m')}</th>" for d in trend)
        lists = "".join(f"<li><a href='{b}/listes/{k}'>{_e(t)}</a></li>" for k, (t, _) in q.LISTS.items())
        body = (f"<p class='muted'>Situation actuelle de chaque dossier connu du connecteur (dernier contrôle qualité, "
                f"dernier envoi, décision de l'OPCO) ; <span class='today'>+n</span> : dont aujourd'hui. "
                f"Mêmes cases que le rapport de run.</p>"
                f"<h2>Tous les dossiers</h2>{table(totals, 'Ensemble', lambda k: 'Tous', 'opco').replace('?opco=-', '')}"
                f"<h2>Par OPCO</h2>{table(ov['by_opco'], 'OPCO', opco_name, 'opco')}"
                f"<h2>Par site</h2>{table(ov['by_site'], 'Site', site_name, 'site')}"
                f"<h2>Tendance (14 derniers jours)</h2><table><tr><th>Série</th><th>Tendance</th>{trend_head}</tr>"
                f"{trend_rows}</table>"
                f"<h2>Listes à traiter</h2><ul>{lists}</ul>")
        return _page("Dossiers OPCO", body, b)

    # ---- lists -----------------------------------------------------------------------
    def _check_kind(kind: str):
        if kind not in q_().LISTS:
            raise HTTPException(404, f"liste inconnue : {kind}")

    @app.get("/listes/{kind}", response_class=HTMLResponse)
    def list_view(kind: str, request: Request, opco: str | None = Query(None), site: str | None = Query(None),
                  page: int = Query(1, ge=1)):
        _check_kind(kind)
        q = q_()
        b = base(request)
        opco, site = opco or None, site or None
        res = q.list_page(kind, opco=opco, site=site, page=page, per_page=PER_PAGE, target=target())
        ch = q.choices(target())
        tabs = " · ".join(
            (f"<b>{_e(t.split(' (')[0].split(' :')[0])}</b>" if k == kind else
             f"<a href='{b}/listes/{k}?{urlencode({x: y for x, y in (('opco', opco), ('site', site)) if y})}'>"
             f"{_e(t.split(' (')[0].split(' :')[0])}</a>") for k, (t, _) in q.LISTS.items())
        opt = lambda values, cur, label: "".join(  # noqa: E731
            f"<option value='{_e(v)}'{' selected' if v == cur else ''}>{_e(label(v))}</option>" for v in values)
        form = (f"<form class='filters' method='get'>OPCO <select name='opco'><option value=''>tous</option>"
                f"{opt(ch['opcos'], opco, q.opco_label)}</select> Site <select name='site'><option value=''>tous</option>"
                f"{opt(ch['sites'], site, str)}</select><button type='submit'>Filtrer</button></form>")
        qs = urlencode({x: y for x, y in (("opco", opco), ("site", site)) if y})
        export = (f"<p>Exporter cette liste filtrée ({res['total']} dossier(s)) : "
                  f"<a href='{b}/listes/{kind}/export.csv?{qs}'>CSV</a> · "
                  f"<a href='{b}/listes/{kind}/export.xlsx?{qs}'>Excel</a>"
                  + (f" <span class='muted'>(Excel limité aux {EXCEL_MAX_ROWS:,} premières lignes ; le CSV les a "
                     f"toutes)</span>".replace(",", " ") if res["total"] > EXCEL_MAX_ROWS else "") + "</p>")
        rows = "".join(
            f"<tr><td><a href='{b}/dossiers/{quote(r['source_id'])}/{quote(r['numero_interne'])}'>"
            f"{_e(r['numero_interne'])}</a></td><td>{_e(r['source_id'])}</td><td>{_e(r['opco_label'])}</td>"
            f"<td>{_e(r['site_code'])}</td><td>{_e(r['conn_id'])}"
            + (f" <span class='badge'>{_e(r['key_scope'])}</span>" if r["key_scope"] else "")
            + f"</td><td>{_e(r['situation'])}</td><td>{_e(_when(r['last_at']))}</td><td>{_e(r['reason'])}</td></tr>"
            for r in res["rows"])
        pages = max(1, -(-res["total"] // PER_PAGE))
        nav = []
        if page > 1:
            nav.append(f"<a href='?{urlencode({**dict(x for x in (('opco', opco), ('site', site)) if x[1]), 'page': page - 1})}'>"
                       "← précédente</a>")
        nav.append(f"<span>page {page} / {pages}</span>")
        if page < pages:
            nav.append(f"<a href='?{urlencode({**dict(x for x in (('opco', opco), ('site', site)) if x[1]), 'page': page + 1})}'>"
                       "suivante →</a>")
        table = ("<table><tr><th>Dossier</th><th>Source</th><th>OPCO</th><th>Site</th><th>Clé (connexion)</th>"
                 f"<th>Situation</th><th>Dernier événement</th><th>Motif / raison</th></tr>{rows}</table>"
                 if rows else "<p>Aucun dossier dans cette liste.</p>")
        body = (f"<p>{tabs}</p><h2>{_e(res['title'])} — {res['total']} dossier(s)</h2>{form}{export}{table}"
                f"<p class='pager'>{''.join(nav)}</p>")
        return _page("Dossiers OPCO — " + res["title"].split(" (")[0].split(" :")[0], body, b)

    def _export_rows(kind: str, opco: str | None, site: str | None, limit: int | None = None):
        q = q_()
        for r in q.iter_list(kind, opco=opco or None, site=site or None, limit=limit, target=target()):
            yield [_when(r[k]) if k == "last_at" else ("" if r[k] is None else str(r[k])) for k, _ in q.EXPORT_COLUMNS]

    def _filename(kind: str, opco: str | None, site: str | None, ext: str) -> str:
        parts = ["dossiers", kind] + [p for p in (opco, site) if p] + [dt.date.today().isoformat()]
        return "-".join(p.replace("/", "_") for p in parts) + f".{ext}"

    @app.get("/listes/{kind}/export.csv")
    def export_csv(kind: str, opco: str | None = Query(None), site: str | None = Query(None)):
        _check_kind(kind)
        q = q_()

        def stream():
            buf = io.StringIO()
            w = csv.writer(buf, delimiter=";")
            buf.write("\ufeff")        # Excel opens UTF-8 CSV with accents right
            w.writerow([label for _, label in q.EXPORT_COLUMNS])
            for n, row in enumerate(_export_rows(kind, opco, site), 1):
                w.writerow(row)
                if n % 500 == 0:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()

        name = _filename(kind, opco, site, "csv")
        return StreamingResponse(stream(), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f"attachment; filename=\"{name}\""})

    @app.get("/listes/{kind}/export.xlsx")
    def export_xlsx(kind: str, opco: str | None = Query(None), site: str | None = Query(None)):
        _check_kind(kind)
        q = q_()
        from openpyxl import Workbook   # lazy: only for an Excel export

        total = q.count_list(kind, opco=opco or None, site=site or None, target=target())
        wb = Workbook(write_only=True)
        ws = wb.create_sheet(kind[:31])
        ws.append([label for _, label in q.EXPORT_COLUMNS])
        for row in _export_rows(kind, opco, site, limit=EXCEL_MAX_ROWS):
            ws.append(row)
        note = wb.create_sheet("À lire")
        note.append([f"Liste : {q.LISTS[kind][0]}"])
        note.append([f"Filtres : OPCO {opco or 'tous'}, site {site or 'tous'} ; extrait le "
                     f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"])
        if total > EXCEL_MAX_ROWS:
            note.append([f"ATTENTION : export limité aux {EXCEL_MAX_ROWS} premières lignes sur {total} ; "
                         "l'export CSV contient toutes les lignes."])
        else:
            note.append([f"{total} ligne(s), toutes exportées."])
        out = io.BytesIO()
        wb.save(out)
        name = _filename(kind, opco, site, "xlsx")
        headers = {"Content-Disposition": f"attachment; filename=\"{name}\"", "X-Rows-Total": str(total),
                   "X-Rows-Exported": str(min(total, EXCEL_MAX_ROWS))}
        return Response(out.getvalue(), headers=headers,
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    # ---- one dossier -----------------------------------------------------------------
    def _dossier_or_404(source_id: str, numero: str) -> dict:
        d = q_().dossier(source_id, numero, target=target())
        if d is None:
            raise HTTPException(404, f"dossier inconnu du connecteur : {source_id} / {numero}")
        return d

    @app.get("/dossiers/{source_id}/{numero}", response_class=HTMLResponse)
    def dossier_view(source_id: str, numero: str, request: Request):
        q = q_()
        b = base(request)
        d = _dossier_or_404(source_id, numero)
        cur = d["current"] or {}
        od = d["opco_dossier"] or {}
        ident = (f"<table><tr><th>Source</th><td>{_e(source_id)}</td></tr>"
                 f"<tr><th>Numéro interne</th><td>{_e(numero)}</td></tr>"
                 f"<tr><th>Situation</th><td><b>{_e(cur.get('situation'))}</b></td></tr>"
                 f"<tr><th>Motif / raison</th><td>{_e(cur.get('reason'))}</td></tr>"
                 f"<tr><th>OPCO</th><td>{_e(cur.get('opco_label'))}</td></tr>"
                 f"<tr><th>Site</th><td>{_e(cur.get('site_code'))}</td></tr>"
                 f"<tr><th>Clé (connexion)</th><td>{_e(cur.get('conn_id'))}"
                 + (f" — portée <b>{_e(cur.get('key_scope'))}</b> "
                    f"({'clé de l’établissement' if cur.get('key_scope') == 'SIRET' else 'clé de l’entreprise'})"
                    if cur.get("key_scope") else "")
                 + f"</td></tr><tr><th>Numéro externe (OPCO)</th><td>{_e(od.get('numero_externe'))}</td></tr>"
                 f"<tr><th>Numéro DECA</th><td>{_e(od.get('numero_deca'))}</td></tr></table>")
        states = "".join(f"<tr><td>{_e(s['etat'])}</td><td>{_e(_when(s['etat_at']))}</td>"
                         f"<td>{_e(_when(s['observed_at']))}</td><td>{_e(s['via'])}</td>"
                         f"<td>{_e(s['motifs_text'] or s['anomalies_text'])}</td></tr>" for s in d["states"])
        ledger = "".join(f"<tr><td>{t['id']}</td><td>{_e(t['run_id'])}</td><td>{_e(t['operation'])}</td>"
                         f"<td>{_e(t['status_label'])}</td><td>{_e(t['conn_id'])}</td><td>{_e(_when(t['created_at']))}</td>"
                         f"<td>{_e(_when(t['completed_at']))}</td><td>{_e(t['http_status'])}</td>"
                         f"<td><code>{_e((t['content_hash'] or '')[:16])}…</code></td>"
                         f"<td>{'oui : ' + _e(t['force_reason']) if t['forced'] else ''}</td>"
                         f"<td>{_e(t['erreurs_text'] or t['message'])}</td></tr>" for t in d["ledger"])
        proofs = "".join(
            f"<tr><td>{p['id']}</td><td>{_e(p['method'])}</td><td>{_e(p['route'])}</td><td>{_e(p['http_status'])}</td>"
            f"<td>{_e(_when(p['sent_at']))}</td><td>{_e(_when(p['received_at']))}</td><td>{_e(p['conn_id'])}</td>"
            f"<td><code title='{_e(p['request_sha256'])}'>{_e((p['request_sha256'] or '—')[:16])}</code></td>"
            f"<td><code title='{_e(p['response_sha256'])}'>{_e((p['response_sha256'] or '—')[:16])}</code></td>"
            f"<td>{_e(p['error'])}</td><td>"
            + (f"<a href='{b}/preuves/{p['id']}/corps'>corps brut</a>" if p["has_body"] else "")
            + "</td></tr>" for p in d["proofs"])
        verdicts = "".join(f"<tr><td>{_e(v['run_id'])}</td><td>{_e(v['verdict'])}</td><td>{v['errors']}</td>"
                           f"<td>{v['warnings']}</td><td>{_e(', '.join(v['rule_codes'] or []))}</td>"
                           f"<td>{_e(_when(v['decided_at']))}</td></tr>" for v in d["verdicts"])
        anomalies = "".join(f"<li><b>{_e(a['rule_code'])}</b> ({_e(a['severity'])}) : {_e(a['message'])}</li>"
                            for a in d["anomalies"])
        params = q.resend_params(numero, "<raison du renvoi>")
        conf = json.dumps(params, ensure_ascii=False, indent=2)
        cli = f"airflow dags trigger {DAILY_DAG_ID} --conf '{json.dumps(params, ensure_ascii=False)}'"
        body = (ident
                + f"<p><a href='{b}/dossiers/{quote(source_id)}/{quote(numero)}/preuves.zip'>Télécharger le dossier "
                  f"de preuves (zip : preuves, états, envois, manifeste)</a></p>"
                + "<h2>États à l'OPCO</h2>"
                + (f"<table><tr><th>État</th><th>Date de l'état (OPCO)</th><th>Vu le</th><th>Lu par</th>"
                   f"<th>Motifs / pièces manquantes</th></tr>{states}</table>" if states else "<p>Aucun état lu.</p>")
                + "<h2>Envois (registre)</h2>"
                + (f"<table><tr><th>#</th><th>Run</th><th>Opération</th><th>Statut</th><th>Clé</th><th>Créé</th>"
                   f"<th>Terminé</th><th>HTTP</th><th>Empreinte du contenu</th><th>Forcé</th><th>Message</th></tr>"
                   f"{ledger}</table>" if ledger else "<p>Aucun envoi enregistré.</p>")
                + "<h2>Échanges avec l'OPCO (preuves)</h2>"
                + (f"<table><tr><th>#</th><th>Méthode</th><th>Route</th><th>HTTP</th><th>Envoyé</th><th>Reçu</th>"
                   f"<th>Clé</th><th>SHA-256 requête</th><th>SHA-256 réponse</th><th>Erreur</th><th>Corps</th></tr>"
                   f"{proofs}</table>" if proofs else "<p>Aucun échange enregistré.</p>")
                + "<h2>Contrôle qualité</h2>"
                + (f"<table><tr><th>Run</th><th>Verdict</th><th>Erreurs</th><th>Avertissements</th><th>Règles</th>"
                   f"<th>Décidé le</th></tr>{verdicts}</table>" if verdicts else "<p>Pas de verdict.</p>")
                + (f"<ul>{anomalies}</ul>" if anomalies else "")
                + "<h2>Renvoyer ce dossier</h2>"
                  f"<p>Déclencher le DAG <b>{DAILY_DAG_ID}</b> avec ces paramètres (remplacer la raison : elle est "
                  f"gardée dans le registre). Dans l'interface : <a href='/dags/{DAILY_DAG_ID}' target='_top'>page du DAG</a> → "
                  f"« Trigger » → paramètres <code>resend</code> et <code>force_reason</code> (ou la configuration "
                  f"JSON ci-dessous).</p><pre id='resend-conf'>{_e(conf)}</pre>"
                  f"<p>En ligne de commande :</p><pre id='resend-cli'>{_e(cli)}</pre>")
        return _page(f"Dossier {numero}", body, b)

    @app.get("/preuves/{proof_id}/corps")
    def proof_raw(proof_id: int):
        p = q_().proof_body(proof_id, target=target())
        if p is None or p["response_body"] is None:
            raise HTTPException(404, "pas de corps brut gardé pour cet échange")
        return Response(p["response_body"], media_type="text/plain; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename=\"preuve-{proof_id}.txt\"",
                                 "X-Original-Content-Type": p["content_type"] or ""})

    @app.get("/dossiers/{source_id}/{numero}/preuves.zip")
    def bundle(source_id: str, numero: str):
        q = q_()
        bnd = q.proof_bundle(source_id, numero, target=target())
        if bnd is None:
            raise HTTPException(404, f"dossier inconnu du connecteur : {source_id} / {numero}")

        def js(v) -> str:
            return json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True, default=str)

        files = {"etats.json": bnd["states"], "envois.json": bnd["ledger"], "echanges.json": bnd["proofs"],
                 "qualite.json": {"verdicts": bnd["verdicts"], "anomalies": bnd["anomalies"]},
                 "routage.json": bnd["plans"], "opco_dossier.json": bnd["opco_dossier"]}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            import hashlib

            digests = {}
            for name, data in files.items():
                raw = js(data).encode()
                z.writestr(name, raw)
                digests[name] = hashlib.sha256(raw).hexdigest()
            for pid, body in bnd["bodies"].items():
                name = f"corps/{pid}.txt"
                raw = body["response_body"].encode()
                z.writestr(name, raw)
                digests[name] = hashlib.sha256(raw).hexdigest()
            manifest = {"bundle": "cfa_opco.proof_bundle", "version": 1, "source_id": source_id,
                        "numero_interne": numero, "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                        "situation": (bnd["current"] or {}).get("situation"),
                        "conn_id": (bnd["current"] or {}).get("conn_id"),
                        "key_scope": (bnd["current"] or {}).get("key_scope"),
                        "hash_basis": "request_sha256 / content_hash : SHA-256 du JSON canonique envoyé (clés triées, "
                                      "UTF-8, sans espaces) ; response_sha256 : SHA-256 des octets de la réponse",
                        "payloads_included": False, "integrity": bnd["integrity"], "files": digests}
            z.writestr("manifest.json", js(manifest))
        return Response(out.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f"attachment; filename=\"preuves-{numero}.zip\""})

    # ---- keys ------------------------------------------------------------------------
    @app.get("/cles", response_class=HTMLResponse)
    def keys_view(request: Request):
        q = q_()
        b = base(request)
        days = _warning_days()
        ks = q.keys(days, target=target(), configured=configured_key_ids())
        rows = "".join(
            f"<tr class='{'alert' if k['alert'] else ''}'><td>{_e(k['opco_label'])}</td><td>{_e(k['conn_id'])}</td>"
            f"<td>{_e(k['scope'])}</td><td>{_e(k['siret'] or k['siren'])}</td><td>{_e(k['expires_on'] or '—')}</td>"
            f"<td class='n days'>{'' if k['days_left'] is None else k['days_left']}</td>"
            f"<td>{_e(q.KEY_STATUS_LABELS.get(k['status'], k['status']))}</td>"
            f"<td>{_e(_when(k['last_success_at']) or '—')}</td><td>{_e(_when(k['checked_at']) or '—')}</td>"
            f"<td>{_e(k['message'] or k['last_error'])}</td></tr>" for k in ks)
        body = (f"<p>Chaque clé API d'OPCO est une connexion Airflow <code>opco_&lt;code&gt;_&lt;SIRET ou SIREN&gt;</code> : "
                f"la clé d'un établissement (SIRET) passe avant celle de son entreprise (SIREN). En rouge : expirée, "
                f"refusée ou expirant dans {days} jours ou moins (Variable <code>cfa_opco_key_expiry_warning_days</code>). "
                f"Changer de clé = modifier le mot de passe de la connexion (Admin → Connections), rien d'autre.</p>"
                + ("<table><tr><th>OPCO</th><th>Connexion</th><th>Portée</th><th>SIRET / SIREN</th><th>Expire le</th>"
                "<th>Jours restants</th><th>État</th><th>Dernier appel réussi</th><th>Vérifiée le</th><th>Message</th>"
                   f"</tr>{rows}</table>" if ks else "<p>Aucune clé connue du connecteur pour l'instant.</p>"))
        return _page("Clés API des OPCO", body, b)

    return app


class CfaDossiersViewPlugin(AirflowPlugin):
    name = "cfa_dossiers_view"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "CFA OPCO dossiers"}]
    external_views = [
        {"name": "Dossiers OPCO", "href": f"{URL_PREFIX}/", "destination": "nav", "category": "browse",
         "url_route": "cfa_dossiers"},
    ]
