"""Proofs of exchange: every attempt recorded (answered or not), bundle export and CLI."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading

import psycopg2
import pytest

from cfa_opco.providers.opco.exceptions import OpcoUnavailable
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.canonical import canonical_json, sha256_hex
from cfa_opco.proofs import ExchangeRecord, ProofRecorder, export_proof_bundle
from cfa_opco.sandbox.seed import sample_dossier

from tests.helpers import SIREN, SOFTWARE, rows


def test_canonical_json_is_the_hash_basis():
    a = {"b": 1, "a": {"é": "Aïssata N'Diaye", "z": [1, 2.5, None]}}
    assert canonical_json(a) == '{"a":{"z":[1,2.5,null],"é":"Aïssata N\'Diaye"},"b":1}'.encode("utf-8")
    assert canonical_json(a) == canonical_json(json.loads(canonical_json(a)))
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_every_attempt_is_recorded_even_without_answer(opco_conn, sandbox, connector_dsn):
    with ProofRecorder(connector_dsn, flush_every=5) as rec:
        h = OpcoHook(opco_conn("atlas"), software=SOFTWARE, proof_sink=rec, run_id="run-P", max_attempts=12,
                     backoff_base=0.01, backoff_max=0.05)
        sandbox.set_faults(error_503=0.3, drop=0.2, seed=3)
        threads = [threading.Thread(target=lambda i=i: h.send_dossier(sample_dossier("atlas", SIREN, f"PR-{i}")))
                   for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sandbox.clear_faults()
        h2 = OpcoHook(opco_conn("atlas"), software=SOFTWARE, proof_sink=rec, max_attempts=2, backoff_base=0.01)
        sandbox.set_faults(drop=1.0)
        with pytest.raises(OpcoUnavailable):
            h2.get_dossier("PR-0")
    total = h.request_count + h2.request_count
    assert rows(connector_dsn, "SELECT count(*) FROM exchange_proof")[0][0] == total
    by_status = dict(rows(connector_dsn, "SELECT coalesce(http_status, 0), count(*) FROM exchange_proof GROUP BY 1"))
    assert by_status[201] == 12 and by_status.get(0, 0) >= 2 and by_status.get(503, 0) >= 1
    lost = rows(connector_dsn, "SELECT received_at, error, sent_at FROM exchange_proof WHERE http_status IS NULL")
    assert all(r[0] is None and r[1].startswith("connection") and r[2].utcoffset() is not None for r in lost)
    ok = rows(connector_dsn, """SELECT request_sha256, numero_deca, run_id, attempt, route FROM exchange_proof
                                WHERE numero_interne='PR-3' AND http_status=201""")[0]
    assert ok[0] == sha256_hex(canonical_json(sample_dossier("atlas", SIREN, "PR-3")))
    assert ok[1] and ok[2] == "run-P" and ok[4] == "/v2/dossiers"
    route = rows(connector_dsn, "SELECT route FROM exchange_proof WHERE run_id IS NULL LIMIT 1")[0][0]
    assert route == "/v2/dossiers?numeroInterne=PR-0"
    with pytest.raises(psycopg2.Error):                                  # append-only
        rows(connector_dsn, "DELETE FROM exchange_proof")


def test_recorder_copies_any_text_exactly(connector_dsn):
    """Proofs go by COPY: tabs, newlines, backslashes and accents come back as recorded."""
    tricky = "a\tb\nc\\N \\ d\r é ; ' \""
    now = dt.datetime.now(dt.timezone.utc)
    with ProofRecorder(connector_dsn) as rec:
        rec(ExchangeRecord(conn_id="c", opco_code="atlas", method="GET", route=f"/v1/x?q={tricky}",
                           sent_at=now, numero_interne="COPY-1", error=tricky, http_status=None))
        rec(ExchangeRecord(conn_id="c", opco_code="atlas", method="GET", route="/v1/status", sent_at=now,
                           received_at=now, numero_interne="COPY-2", http_status=200, attempt=3))
    got = rows(connector_dsn, """SELECT route, error, http_status, received_at, attempt, sent_at FROM exchange_proof
                                 WHERE numero_interne LIKE 'COPY-%%' ORDER BY numero_interne""")
    assert got[0][:4] == (f"/v1/x?q={tricky}", tricky, None, None)
    assert got[1][2:5] == (200, now, 3) and got[0][5] == now


def test_recorder_keeps_records_when_the_database_fails(tmp_path):
    rec = ProofRecorder("postgresql://nobody@127.0.0.1:1/none", flush_every=1000)
    rec(ExchangeRecord(conn_id="c", opco_code="atlas", method="GET", route="/v1/status",
                       sent_at=dt.datetime.now(dt.timezone.utc)))
    with pytest.raises(psycopg2.Error):
        rec.flush()
    assert rec.pending == 1


def test_export_bundle_and_cli(opco_conn, sandbox, connector_dsn, tmp_path):
    payload = sample_dossier("atlas", SIREN, "BUNDLE-1")
    with ProofRecorder(connector_dsn) as rec:
        h = OpcoHook(opco_conn("atlas"), software=SOFTWARE, proof_sink=rec, run_id="run-B")
        r = h.send_dossier(payload)
    conn = psycopg2.connect(connector_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                           conn_id, content_hash, payload, status, http_status, numero_deca)
                       VALUES ('run-B','erp_main','BUNDLE-1','DOSSIER','atlas',%s,'opco_atlas_775672272',%s,%s,'SENT',201,%s)""",
                    (SIREN, sha256_hex(canonical_json(payload)), json.dumps(payload), r.numero_deca))
        cur.execute("""INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, etat, etat_at,
                           numero_deca, first_run_id, sent_at)
                       VALUES ('erp_main','BUNDLE-1','atlas',%s,'opco_atlas_775672272','TRANSMIS',%s,%s,'run-B',now())""",
                    (SIREN, r.date_etat, r.numero_deca))
    conn.close()
    b = export_proof_bundle(connector_dsn, "BUNDLE-1")
    assert len(b["exchanges"]) == 1 and b["exchanges"][0]["http_status"] == 201
    assert b["integrity"]["ledger_hashes_sent"] == [sha256_hex(canonical_json(payload))]
    assert "payload" not in b["transmissions"][0] and b["opco_dossiers"][0]["numero_deca"] == r.numero_deca
    text = json.dumps(b)
    assert "207036938812344" not in text                                  # no NIR without --with-payload
    out = tmp_path / "bundle.json"
    proc = subprocess.run([sys.executable, "-m", "cfa_opco.proofs", "export", "BUNDLE-1",
                           "--connector", connector_dsn, "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["numero_interne"] == "BUNDLE-1"
    full = export_proof_bundle(connector_dsn, "BUNDLE-1", include_payload=True)
    assert full["transmissions"][0]["payload"]["apprenti"]["nir"] == "207036938812344"


def test_a_proof_store_outage_does_not_lose_the_answer(opco_conn, sandbox):
    rec = ProofRecorder("postgresql://nobody@127.0.0.1:1/none", flush_every=1)
    h = OpcoHook(opco_conn("atlas"), software=SOFTWARE, proof_sink=rec)
    assert h.send_dossier(sample_dossier("atlas", SIREN, "OUTAGE-1")).status == 201
    assert rec.pending == 1                       # kept for the next flush


def test_an_unreadable_answer_is_kept_in_exchange_proof_masked(opco_conn, sandbox, connector_dsn):
    """Answers that are not JSON (an empty 404, a plain-text 422): the raw body lands in
    exchange_proof.response_body with its Content-Type (masked: see test_reading); the bundle
    shows it only with the payloads (it may quote personal data)."""
    sandbox.set_profile(None, "empty_bodies")
    try:
        with ProofRecorder(connector_dsn) as rec:
            h = OpcoHook(opco_conn("atlas"), software=SOFTWARE, proof_sink=rec, run_id="run-U")
            assert h.get_dossier("UNREAD-1").status == 404            # an empty 404: kept raw (empty)
            sandbox.set_profile(None, "text_errors")
            r = h.send_dossier(sample_dossier("atlas", SIREN, "UNREAD-1", **{"apprenti.nir": "123"}))
            assert r.status == 422
    finally:
        sandbox.set_profile(None, "strict")
    got = rows(connector_dsn, "SELECT http_status, content_type, response_body, error FROM exchange_proof "
                              "WHERE run_id = 'run-U' ORDER BY id")
    assert [g[0] for g in got] == [404, 422]
    assert got[1][1].startswith("text/plain") and got[1][2].startswith("Erreur 422 : ")
    assert got[0][2] == "" and got[0][3] == "HTTP 404"                  # an empty answer, kept as such
    assert got[1][3] == "FORMAT apprenti.nir"                          # codes and fields read from the text
    b = export_proof_bundle(connector_dsn, "UNREAD-1")
    assert all("response_body" not in e for e in b["exchanges"])
    full = export_proof_bundle(connector_dsn, "UNREAD-1", include_payload=True)
    assert any((e.get("response_body") or "").startswith("Erreur 422") for e in full["exchanges"])
