"""State follow-up (cfa_opco.followup) against the real sandbox and a real connector DB."""
from __future__ import annotations

import datetime as dt
import json

import psycopg2
import pytest

from cfa_opco.followup import pending_for_run, run_summary, sync_states
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.sandbox.seed import sample_dossier
from tests.helpers import SIREN, SOFTWARE, rows



@pytest.fixture
def osbx(sandbox, opco_conn):
    """The shared sandbox (tests/conftest.py), reset, with ``.conn(opco, siren)`` making an
    AIRFLOW_CONN_* connection to it."""
    sandbox.conn = opco_conn
    return sandbox


def record_sent(dsn: str, conn_id: str, opco: str, responses: list, run_id: str = "run-A", source_id: str = "erp_main",
                sent_at: dt.datetime | None = None, last_checked_at: dt.datetime | None = None) -> None:
    """What the transmission operator writes once a dossier is sent."""
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for r in responses:
            body = r if isinstance(r, dict) else r.body
            cur.execute("""INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, nature,
                               numero_externe, numero_deca, etat, etat_at, first_run_id, sent_at, last_checked_at)
                           VALUES (%s,%s,%s,%s,%s,'CONTRAT',%s,%s,%s,%s,%s,COALESCE(%s, now()),COALESCE(%s, now()))""",
                        (source_id, body["numeroInterne"], opco, SIREN, conn_id, body.get("numeroExterne"),
                         body.get("numeroDeca"), body.get("etat", "TRANSMIS"), body.get("dateEtat"), run_id,
                         sent_at, last_checked_at))
            cur.execute("""INSERT INTO opco_state_change (source_id, numero_interne, opco_code, etat, etat_at, via)
                           VALUES (%s,%s,%s,%s,%s,'post')""", (source_id, body["numeroInterne"], opco,
                                                               body.get("etat", "TRANSMIS"), body.get("dateEtat")))
    conn.close()


def send_three(osbx, opco: str, prefix: str) -> list:
    """A dossier left incomplete, one completed by its convention, one refused (apprentice too old)."""
    h = OpcoHook(osbx.conn(opco), software=SOFTWARE)
    inc = h.send_dossier(sample_dossier(opco, SIREN, f"{prefix}-INC"))
    ok = h.send_dossier(sample_dossier(opco, SIREN, f"{prefix}-OK"))
    ref = h.send_dossier(sample_dossier(opco, SIREN, f"{prefix}-REF", **{"apprenti.dateNaissance": "1980-01-01"}))
    assert h.attach_document(f"{prefix}-OK", "CONVENTION_FORMATION", "c.pdf", b"%PDF demo").status == 201
    assert [r.status for r in (inc, ok, ref)] == [201, 201, 201]
    return [inc, ok, ref]


@pytest.mark.parametrize("opco,via", [("atlas", "etats_v2"), ("akto", "etats_v2"), ("constructys", "liste_v1")])
def test_states_move_and_are_recorded_once(osbx, connector_dsn, opco, via):
    osbx.set_delays(instruction=5, decision=10)
    conn_id = osbx.conn(opco)
    record_sent(connector_dsn, conn_id, opco, send_three(osbx, opco, f"FU-{opco}"))
    written = []

    r0 = sync_states(connector_dsn, lag_seconds=0, writeback=lambda src, rows: written.append((src, rows)))
    assert r0["errors"] == {} and r0["changes"] == 0 and r0["connections"] == 1
    assert r0["per_connection"][conn_id]["mode"] == via

    osbx.advance_clock(6)
    r1 = sync_states(connector_dsn, lag_seconds=0, writeback=lambda src, rows: written.append((src, rows)))
    assert r1["changes"] == 3 and r1["by_etat"] == {"EN_COURS_INSTRUCTION": 3}, r1
    inc = rows(connector_dsn, "SELECT etat, anomalies FROM opco_dossier WHERE numero_interne=%s", f"FU-{opco}-INC")[0]
    assert inc[0] == "EN_COURS_INSTRUCTION" and inc[1][0]["piece"] == "CONVENTION_FORMATION"

    osbx.advance_clock(11)
    r2 = sync_states(connector_dsn, lag_seconds=0, writeback=lambda src, rows: written.append((src, rows)))
    assert r2["by_etat"] == {"ENGAGE": 1, "REFUSE": 1}, r2
    r3 = sync_states(connector_dsn, lag_seconds=0)
    assert r3["changes"] == 0                                       # nothing new: nothing appended

    states = dict(rows(connector_dsn, "SELECT numero_interne, etat FROM opco_dossier"))
    assert states == {f"FU-{opco}-INC": "EN_COURS_INSTRUCTION", f"FU-{opco}-OK": "ENGAGE", f"FU-{opco}-REF": "REFUSE"}
    hist = rows(connector_dsn, "SELECT numero_interne, etat, via FROM opco_state_change WHERE via <> 'post' ORDER BY id")
    assert len(hist) == 5 and {h[2] for h in hist} == {via}
    motifs = rows(connector_dsn, "SELECT motifs FROM opco_dossier WHERE numero_interne=%s", f"FU-{opco}-REF")[0][0]
    assert motifs and motifs[0]["code"]
    assert sum(len(rows) for _, rows in written) == 5 and {src for src, _ in written} == {"erp_main"}

    pend = pending_for_run(connector_dsn, "run-A")
    assert [p["numero_interne"] for p in pend] == [f"FU-{opco}-INC"]
    s = run_summary(connector_dsn, "run-A")
    assert (s["accepted"], s["refused"], s["pending"], s["incomplete"], s["total"]) == (1, 1, 1, 1, 3)
    # every request of the sync left a proof of exchange
    proofs = rows(connector_dsn, "SELECT count(*) FROM exchange_proof WHERE conn_id=%s", conn_id)[0][0]
    assert proofs == r0["requests"] + r1["requests"] + r2["requests"] + r3["requests"]
    if via == "etats_v2":
        wm = rows(connector_dsn, "SELECT window_end FROM sync_watermark WHERE conn_id=%s", conn_id)
        assert wm and wm[0][0] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=15)   # sandbox clock


def test_window_cost_grows_with_changes_not_with_stock(osbx, connector_dsn):
    conn_id = osbx.conn("opcommerce")
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)).isoformat()
    seeded = osbx.seed("opcommerce", SIREN, count=2500, prefix="ST", spread_seconds=3600, start=start,
                      outcomes=["ENGAGE", "REFUSE", "INCOMPLET"])
    items = [{"numeroInterne": f"ST-{i:09d}", "etat": "TRANSMIS"} for i in range(1, 2501)]
    record_sent(connector_dsn, conn_id, "opcommerce", items,
                sent_at=dt.datetime.fromisoformat(seeded["from"].replace("Z", "+00:00")))
    r1 = sync_states(connector_dsn, page_size=1000)
    assert r1["changes"] == 2500 and r1["requests"] == 1 + 3          # status + 3 pages
    assert r1["by_etat"]["ENGAGE"] in (833, 834) and r1["by_etat"]["EN_COURS_INSTRUCTION"] in (833, 834)
    r2 = sync_states(connector_dsn, page_size=1000)                  # 833 dossiers still open
    assert r2["changes"] == 0 and r2["requests"] == 2                  # status + one empty page


def test_watermark_not_advanced_when_the_window_is_not_fully_read(osbx, connector_dsn):
    conn_id = osbx.conn("atlas")
    h = OpcoHook(conn_id, software=SOFTWARE)
    record_sent(connector_dsn, conn_id, "atlas", [h.send_dossier(sample_dossier("atlas", SIREN, "WM-1"))])
    osbx.set_faults(error_503=1.0, routes=["etats_v2"])
    r = sync_states(connector_dsn, lag_seconds=0,
                    hook_factory=lambda cid: OpcoHook(cid, max_attempts=2, backoff_base=0.01))
    assert conn_id in r["errors"] and "ne répond pas" in r["errors"][conn_id]
    assert rows(connector_dsn, "SELECT count(*) FROM sync_watermark")[0][0] == 0
    osbx.clear_faults()
    r = sync_states(connector_dsn, lag_seconds=0)
    assert r["errors"] == {} and r["changes"] == 1                    # TRANSMIS -> EN_COURS (instant)
    assert rows(connector_dsn, "SELECT count(*) FROM sync_watermark")[0][0] == 1


def test_stale_open_dossiers_are_caught_by_the_safety_net(osbx, connector_dsn):
    conn_id = osbx.conn("atlas")
    h = OpcoHook(conn_id, software=SOFTWARE)
    first = h.send_dossier(sample_dossier("atlas", SIREN, "SAFE-1"))
    record_sent(connector_dsn, conn_id, "atlas", [first])
    sync_states(connector_dsn, lag_seconds=0)                         # watermark now past SAFE-2's change
    late = h.send_dossier(sample_dossier("atlas", SIREN, "SAFE-2"))
    osbx.advance_clock(1)
    sync_states(connector_dsn, lag_seconds=0)
    # SAFE-2 is recorded only now (a crash between send and record), its change already read
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    record_sent(connector_dsn, conn_id, "atlas", [late], sent_at=old, last_checked_at=old)
    r = sync_states(connector_dsn, lag_seconds=0)
    assert r["per_connection"][conn_id]["stale_checked"] == 2 - 1    # SAFE-1 was checked recently
    assert dict(rows(connector_dsn, "SELECT numero_interne, etat FROM opco_dossier"))["SAFE-2"] == "EN_COURS_INSTRUCTION"


def test_a_bad_key_does_not_stop_the_other_connections(osbx, connector_dsn, monkeypatch):
    good = osbx.conn("atlas")
    bad = osbx.conn("mobilites")
    monkeypatch.setenv("AIRFLOW_CONN_OPCO_MOBILITES_775672272", json.dumps(
        {"conn_type": "http", "host": osbx.api("mobilites"), "password": "wrong", "extra": {"siren": SIREN}}))
    h = OpcoHook(good, software=SOFTWARE)
    record_sent(connector_dsn, good, "atlas", [h.send_dossier(sample_dossier("atlas", SIREN, "BK-1"))])
    record_sent(connector_dsn, bad, "mobilites", [{"numeroInterne": "BK-2", "etat": "TRANSMIS"}])
    r = sync_states(connector_dsn, lag_seconds=0)
    assert set(r["errors"]) == {bad} and "Mobilités" in r["errors"][bad]
    assert r["changes"] == 1


def test_key_warnings(osbx, connector_dsn):
    ids = [osbx.conn("constructys", "418936522"), osbx.conn("atlas"), osbx.conn("sante")]
    from cfa_opco.followup import key_warnings

    w = key_warnings(connector_dsn, 30, conn_ids=ids)
    assert list(w) == ["opco_constructys_418936522"] and "expire le" in w["opco_constructys_418936522"]
    assert key_warnings(connector_dsn, 5, conn_ids=ids) == {}


def test_a_key_that_cannot_be_read_is_marked_suivi_impossible_and_the_others_complete(osbx, connector_dsn):
    """Issue 10 point 9: failing polls are counted per key; from the limit on, that key's open
    dossiers are "suivi impossible" with the reason (not pending: the run does not wait for
    them), the other OPCO's decisions are recorded all the same; one good read clears it."""
    from cfa_opco.followup import poll_health

    good, bad = osbx.conn("atlas"), osbx.conn("constructys")
    osbx.set_delays(instruction=1, decision=2)
    record_sent(connector_dsn, good, "atlas", send_three(osbx, "atlas", "PH-A"))
    record_sent(connector_dsn, bad, "constructys", send_three(osbx, "constructys", "PH-C"))
    osbx.advance_clock(5)
    osbx.set_faults(error_503=1.0, opcos=["constructys"])
    factory = lambda cid: OpcoHook(cid, max_attempts=1, backoff_base=0.01)   # noqa: E731
    decided = {}
    for i in (1, 2):
        r = sync_states(connector_dsn, lag_seconds=0, hook_factory=factory, poll_failure_limit=3)
        assert set(r["errors"]) == {bad} and r["poll_failures"] == {bad: i} and r["suivi_impossible"] == {}
        for k, v in r["by_etat"].items():
            decided[k] = decided.get(k, 0) + v
    assert decided.get("ENGAGE") == 1 and decided.get("REFUSE") == 1     # atlas went on
    r = sync_states(connector_dsn, lag_seconds=0, hook_factory=factory, poll_failure_limit=3)
    mark = r["suivi_impossible"][bad]
    assert mark["dossiers"] == 3 and mark["failures"] == 3
    assert "Suivi impossible" in mark["reason"] and bad in mark["reason"] and "503" in mark["reason"]
    reasons = rows(connector_dsn, """SELECT DISTINCT suivi_impossible_reason FROM opco_dossier
                                    WHERE conn_id = %s""", bad)
    assert len(reasons) == 1 and reasons[0][0] == mark["reason"]
    s = run_summary(connector_dsn, "run-A")
    assert s["suivi_impossible"] == 3 and s["pending"] == 1 and s["accepted"] == 1   # atlas' INC waits on docs
    assert poll_health(connector_dsn)[bad]["consecutive_failures"] == 3
    # the OPCO answers again: the key is read, the mark goes, its decisions come in
    osbx.clear_faults()
    r = sync_states(connector_dsn, lag_seconds=0, hook_factory=factory, poll_failure_limit=3)
    assert r["errors"] == {} and r["suivi_impossible"] == {}
    assert rows(connector_dsn, "SELECT count(*) FROM opco_dossier WHERE suivi_impossible_at IS NOT NULL")[0][0] == 0
    assert poll_health(connector_dsn) == {}
    assert run_summary(connector_dsn, "run-A")["suivi_impossible"] == 0


def test_poll_failure_limit_comes_from_the_variable(monkeypatch):
    from cfa_opco.followup import failure_limit

    assert failure_limit(None) == 5
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_POLL_FAILURE_LIMIT", "2")
    assert failure_limit(None) == 2 and failure_limit(7) == 7


def test_the_decision_check_names_a_key_it_cannot_read_and_does_not_wait_for_it(osbx, connector_dsn):
    """The sensor's check (opco_tasks.check_decisions): past the failure limit, a key that
    cannot be read is named with its dossiers, and the run is done as soon as the other
    OPCOs have decided — not a green wait until the deadline."""
    import datetime as _dt

    from cfa_opco.opco_tasks import check_decisions

    good, bad = osbx.conn("atlas"), osbx.conn("constructys")
    osbx.set_delays(instruction=1, decision=2)
    h = OpcoHook(good, software=SOFTWARE)
    ok = h.send_dossier(sample_dossier("atlas", SIREN, "CK-OK"))
    assert h.attach_document("CK-OK", "CONVENTION_FORMATION", "c.pdf", b"%PDF demo").status == 201
    record_sent(connector_dsn, good, "atlas", [ok])
    record_sent(connector_dsn, bad, "constructys", [{"numeroInterne": "CK-C", "etat": "TRANSMIS"}])
    osbx.advance_clock(5)
    osbx.set_faults(error_503=1.0, opcos=["constructys"])
    factory = lambda cid: OpcoHook(cid, max_attempts=1, backoff_base=0.01)   # noqa: E731
    deadline = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1)
    outcomes = [check_decisions(run_id="run-A", connector_conn_id=connector_dsn, deadline_at=deadline,
                                hook_factory=factory, lag_seconds=0) for _ in range(5)]   # default limit: 5
    done, summary = outcomes[-1]
    assert [d for d, _ in outcomes[:-1]] == [False] * 4
    assert done and summary["status"] == "complete" and summary["accepted"] == 1
    assert summary["suivi_impossible"] == 1 and summary["pending"] == 0
    assert summary["suivi_impossible_keys"][bad]["dossiers"] == 1
    assert summary["suivi_impossible_keys"][bad]["failures"] == 5
