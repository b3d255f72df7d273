"""OpcoStateChangeTrigger (run with asyncio) and OpcoDecisionSensor (poke and deferral)."""
from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
from datetime import timedelta

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.sensors.opco_states import OpcoDecisionSensor
from cfa_opco.providers.opco.triggers.opco_states import OpcoStateChangeTrigger
from cfa_opco.sandbox.seed import sample_dossier

from tests.helpers import SIREN, SOFTWARE


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def first_event(trigger, timeout: float = 20):
    async def go():
        async for ev in trigger.run():
            return ev
    return asyncio.run(asyncio.wait_for(go(), timeout))


def record(dsn, conn_id, opco, resp, run_id):
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, etat, etat_at,
                           numero_externe, numero_deca, first_run_id, sent_at, last_checked_at)
                       VALUES ('erp_main', %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())""",
                    (resp.body["numeroInterne"], opco, SIREN, conn_id, resp.etat, resp.date_etat,
                     resp.numero_externe, resp.numero_deca, run_id))
    conn.close()


# ---- trigger --------------------------------------------------------------------------------
def test_trigger_serializes_no_secret(opco_conn):
    t = OpcoStateChangeTrigger(["opco_akto_775672272"], {"opco_akto_775672272": now().isoformat()}, 5,
                               (now() + timedelta(hours=1)).isoformat())
    path, kwargs = t.serialize()
    text = json.dumps(kwargs)
    assert "demo-" not in text and "secret" not in text
    mod, _, name = path.rpartition(".")
    again = getattr(importlib.import_module(mod), name)(**kwargs)
    assert again.serialize() == (path, kwargs)


def test_trigger_fires_on_changes_of_v2_opcos(opco_conn, sandbox):
    atlas, akto = opco_conn("atlas"), opco_conn("akto")
    since = now() - timedelta(seconds=5)
    OpcoHook(akto, software=SOFTWARE).send_dossier(sample_dossier("akto", SIREN, "TR-AKTO-1"))
    ev = first_event(OpcoStateChangeTrigger([atlas, akto], {atlas: since.isoformat(), akto: since.isoformat()}, 0.2,
                                            (now() + timedelta(minutes=1)).isoformat(), software=SOFTWARE))
    assert ev.payload["status"] == "changed" and ev.payload["changed"] == {akto: 1}
    assert ev.payload["unwindowed"] == []


def test_trigger_deadline_and_v1_only(opco_conn, sandbox):
    atlas = opco_conn("atlas")
    later = (now() + timedelta(hours=1)).isoformat()
    ev = first_event(OpcoStateChangeTrigger([atlas], {atlas: later}, 0.2, (now() + timedelta(seconds=1)).isoformat()))
    assert ev.payload["status"] == "deadline" and ev.payload["polls"] >= 1
    cons = opco_conn("constructys")
    ev = first_event(OpcoStateChangeTrigger([atlas, cons], {atlas: later}, 0.2, later))
    assert ev.payload["status"] == "changed" and ev.payload["unwindowed"] == [cons]


def test_trigger_reports_a_refused_key(opco_conn, sandbox):
    bad = opco_conn("atlas", key="nope")
    ev = first_event(OpcoStateChangeTrigger([bad], {}, 0.1, (now() + timedelta(minutes=1)).isoformat()))
    assert ev.payload["status"] == "error" and "OPCO Atlas" in ev.payload["message"]
    assert "nope" not in ev.payload["message"]


# ---- sensor ---------------------------------------------------------------------------------
@pytest.fixture
def run_with_two_dossiers(opco_conn, sandbox, connector_dsn):
    """run-S: one dossier engaged at once (its convention is attached), one left incomplete."""
    conn_id = opco_conn("atlas")
    h = OpcoHook(conn_id, software=SOFTWARE)
    for ni in ("SN-OK", "SN-INC"):
        record(connector_dsn, conn_id, "atlas", h.send_dossier(sample_dossier("atlas", SIREN, ni)), "run-S")
    assert h.attach_document("SN-OK", "CONVENTION_FORMATION", "c.pdf", b"%PDF").ok
    return h


def sensor(dsn, **kw) -> OpcoDecisionSensor:
    kw.setdefault("deadline", timedelta(hours=1))
    kw.setdefault("lag_seconds", 0)
    kw.setdefault("check", "cfa_opco.opco_tasks.check_decisions")
    return OpcoDecisionSensor(task_id="wait_decisions", run_id="run-S", connector_conn_id=dsn, software=SOFTWARE, **kw)


def test_sensor_poke_until_every_dossier_is_decided(run_with_two_dossiers, connector_dsn):
    s = sensor(connector_dsn, deferrable=False, poke_interval=0.2)
    r = s.poke({})
    assert not r.is_done
    assert (r.xcom_value["accepted"], r.xcom_value["pending"], r.xcom_value["incomplete"]) == (1, 1, 1)
    assert run_with_two_dossiers.attach_document("SN-INC", "CONVENTION_FORMATION", "c.pdf", b"%PDF").ok
    r = s.poke({})
    assert r.is_done and r.xcom_value["status"] == "complete" and r.xcom_value["accepted"] == 2


def test_sensor_returns_at_the_deadline_with_pending_reported(run_with_two_dossiers, connector_dsn):
    s = sensor(connector_dsn, deferrable=False, deadline=timedelta(0))
    out = s.execute({})
    assert out["status"] == "deadline" and out["pending"] == 1
    assert out["pending_dossiers"] == [{"source_id": "erp_main", "numero_interne": "SN-INC", "opco_code": "atlas",
                                        "etat": "EN_COURS_INSTRUCTION", "incomplete": True}]


def test_sensor_timeout_in_poke_mode(run_with_two_dossiers, connector_dsn):
    s = sensor(connector_dsn, deferrable=False, poke_interval=0.2, timeout=0.5)
    with pytest.raises(AirflowSensorTimeout):
        s.execute({})


def test_sensor_defers_then_completes(run_with_two_dossiers, connector_dsn):
    s = sensor(connector_dsn, deferrable=True, poke_interval=0.2, timeout=600)
    with pytest.raises(TaskDeferred) as exc:
        s.execute({})
    d = exc.value
    assert isinstance(d.trigger, OpcoStateChangeTrigger) and d.method_name == "execute_complete"
    assert d.trigger.conn_ids == ["opco_atlas_775672272"]
    assert timedelta(seconds=590) < d.timeout <= timedelta(seconds=600)
    # nothing new: the trigger wakes up only at a change; the sensor re-defers
    with pytest.raises(TaskDeferred):
        s.execute_complete({}, {"status": "changed"}, **d.kwargs)
    assert run_with_two_dossiers.attach_document("SN-INC", "CONVENTION_FORMATION", "c.pdf", b"%PDF").ok
    ev = first_event(d.trigger)
    assert ev.payload["status"] == "changed"
    out = s.execute_complete({}, ev.payload, **d.kwargs)
    assert out["status"] == "complete" and out["accepted"] == 2 and out["pending"] == 0


def test_sensor_timeout_is_honoured_across_deferrals(run_with_two_dossiers, connector_dsn):
    s = sensor(connector_dsn, deferrable=True, timeout=60)
    started = (now() - timedelta(seconds=61)).isoformat()
    with pytest.raises(AirflowSensorTimeout):
        s.execute_complete({}, {"status": "changed"}, started_at=started,
                           deadline_at=(now() + timedelta(hours=1)).isoformat())


def test_sensor_reports_poll_failures_and_hands_them_to_the_next_trigger(run_with_two_dossiers, connector_dsn):
    s = sensor(connector_dsn, deferrable=True, poke_interval=0.2, timeout=600,
               proof_sink="cfa_opco.proofs.ProofRecorder")
    with pytest.raises(TaskDeferred) as exc:
        s.execute({})
    d = exc.value
    assert d.trigger.proof_sink == "cfa_opco.proofs.ProofRecorder" and d.trigger.proof_target == connector_dsn
    assert d.trigger.run_id == "run-S"
    failures = {"opco_atlas_775672272": {"count": 5, "consecutive": 5,
                                         "last_reason": "L'API de l'OPCO Atlas ne répond pas (etats_v2)"}}
    with pytest.raises(TaskDeferred) as again:
        s.execute_complete({}, {"status": "poll_failures", "poll_failures": failures}, **d.kwargs)
    assert again.value.trigger.poll_failures == failures
    done, summary = s.check(now() + timedelta(hours=1), {"status": "poll_failures", "poll_failures": failures})
    assert not done and summary["poll_failures"] == failures


def test_the_dag_wires_the_glue_by_dotted_path():
    """The daily DAG hands the provider its project callables by name (no project import inside it)."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).parents[2] / "dags" / "cfa_opco_daily.py"))
    dag = bag.dags["cfa_opco_daily"]
    wait = dag.get_task("wait_for_decisions")
    assert wait.check_fn == "cfa_opco.opco_tasks.check_decisions" and wait.proof_sink == "cfa_opco.proofs.ProofRecorder"
    transmit = dag.get_task("opco_akto.transmit")
    assert transmit.partial_kwargs["transmit"] == "cfa_opco.opco_tasks.transmit"
