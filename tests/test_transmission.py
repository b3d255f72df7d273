"""Exactly-once transmission against the real sandbox (HTTP subprocess) and a real
PostgreSQL: every routed dossier created once, reruns send nothing again, lost answers
are resolved by reading the OPCO, a process killed mid-batch loses and doubles nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cfa_opco.extraction import extract
from cfa_opco.sandbox.testing import run_sandbox
from cfa_opco.transmission import plan, transmit_batch
from tests import transmission_env
from tests.helpers import rows

RUN = "manual__test"
FAULT_OPCOS = ("atlas", "opco_ep", "constructys")   # v2 and v1-only OPCOs


@pytest.fixture()
def sandbox():
    # idempotency off: the sandbox creates a second dossier for a resent numeroInterne,
    # so only the client's ledger can keep creations at one
    with run_sandbox(instant=True, rate_limit=0, overrides={"idempotency": False}) as sbx:
        yield sbx


@pytest.fixture()
def staged(sandbox, sources, connector_dsn, monkeypatch, tmp_path):
    env = transmission_env.opco_connection_env(sandbox.port, extra_overrides={"rate_limit_per_second": 0})
    transmission_env.apply(monkeypatch, env)
    extract(RUN, sources, connector_dsn)
    from cfa_opco.quality.gate import run_quality_gate

    run_quality_gate(RUN, connector_dsn, reports_dir=tmp_path / "reports")
    return {"sandbox": sandbox, "sources": sources, "connector": connector_dsn}


def _creations(sbx) -> dict[str, int]:
    from cfa_opco.opcos import opco_codes

    total: dict[str, int] = {}
    for code in opco_codes():
        for numero, n in sbx.creations(code)["creations"].items():
            total[numero] = total.get(numero, 0) + n
    return total


def _transmit_all(ctx, run=RUN, opcos=None, **kw) -> dict:
    planned = plan(run, ctx["connector"])
    out = {}
    for code, batches in planned["batches"].items():
        if opcos and code not in opcos:
            continue
        for b in batches:
            out[b["conn_id"]] = transmit_batch(run, ctx["connector"], b["conn_id"], sources=ctx["sources"],
                                               max_workers=4, retry_base=0.01, **kw)
    return {"plan": planned, "batches": out}


def test_plan_routes_and_reports_what_needs_a_person(staged):
    planned = plan(RUN, staged["connector"])
    assert planned["routed"] > 1500
    # SANTE takes no contract by API, AFDAS has no key for SIREN 324578137, unknown IDCCs
    reasons = dict(rows(staged["connector"], """SELECT decision, string_agg(DISTINCT left(reason, 40), ' | ')
                                              FROM transmission_plan WHERE decision <> 'ROUTED' GROUP BY 1"""))
    assert "NOT_SERVED" in reasons and "SANTE" in reasons["NOT_SERVED"]
    assert "NEEDS_HUMAN" in reasons and "Aucune clé API AFDAS" in reasons["NEEDS_HUMAN"]
    assert set(planned["batches"]) <= {"akto", "atlas", "afdas", "constructys", "ocapiat", "opco_2i",
                                       "opco_ep", "mobilites", "opcommerce", "uniformation"}
    again = plan(RUN, staged["connector"])
    assert again["replanned"] and again["routed"] == planned["routed"]


def test_every_routed_dossier_created_exactly_once_and_reruns_send_nothing(staged):
    sbx = staged["sandbox"]
    first = _transmit_all(staged)
    sent = sum(b["sent"] for b in first["batches"].values())
    assert sent > 1000
    creations = _creations(sbx)
    assert max(creations.values()) == 1
    ledger = dict(rows(staged["connector"], """SELECT status, count(*) FROM transmission
                                             WHERE operation = 'DOSSIER' GROUP BY 1"""))
    assert ledger["SENT"] == len(creations) == sent
    pieces = rows(staged["connector"], "SELECT count(*) FROM transmission WHERE operation = 'PIECE' AND status = 'SENT'")
    assert pieces[0][0] > 0.9 * sent * 0.9
    # a whole rerun of the same run: nothing sent again
    second = _transmit_all(staged)
    assert sum(b["sent"] for b in second["batches"].values()) == 0
    assert sum(b["already_sent"] for b in second["batches"].values()) >= sent
    assert _creations(sbx) == creations
    # the next day's extraction takes nothing that was sent
    nxt = extract("manual__next", staged["sources"], staged["connector"])
    assert nxt["extracted"] == 2000 - sent - nxt["unchanged_rejected"] if "unchanged_rejected" in nxt \
        else nxt["extracted"] <= 2000 - sent


def test_lost_answers_are_resolved_by_reading_the_opco(staged):
    sbx = staged["sandbox"]
    # a third of the creations are processed but their answer is lost (503 or a dropped connection)
    sbx.set_faults(lost_response=0.35, methods=["POST"])
    result = _transmit_all(staged, opcos=FAULT_OPCOS)
    sbx.clear_faults()
    resolved = sum(b["resolved_in_doubt"] for b in result["batches"].values())
    assert resolved > 20
    creations = _creations(sbx)
    assert max(creations.values()) == 1, [n for n, c in creations.items() if c > 1][:5]
    in_doubt = rows(staged["connector"], "SELECT count(*) FROM transmission WHERE status = 'PENDING'")[0][0]
    if in_doubt:   # whatever stayed in doubt is settled by the next attempt, still without a double
        _transmit_all(staged, opcos=FAULT_OPCOS)
        assert max(_creations(sbx).values()) == 1
    assert rows(staged["connector"], "SELECT count(*) FROM transmission WHERE status = 'PENDING'")[0][0] == 0


def test_heavy_faults_still_exactly_once(staged):
    sbx = staged["sandbox"]
    # (each injected 429 pauses the key for its Retry-After of 1 s: a few are enough)
    sbx.set_faults(error_503=0.25, error_429=0.03, drop=0.05, methods=["ALL"])
    _transmit_all(staged, opcos=("atlas", "constructys"))
    sbx.clear_faults()
    _transmit_all(staged, opcos=("atlas", "constructys"))   # settles what stayed in doubt
    creations = _creations(sbx)
    assert max(creations.values()) == 1
    sent = rows(staged["connector"], "SELECT count(*) FROM transmission WHERE operation='DOSSIER' AND status='SENT'")[0][0]
    assert sent == len(creations) > 100


KILLABLE = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from cfa_opco.transmission import transmit_batch
    from cfa_opco.sources import load_sources
    transmit_batch({run!r}, {connector!r}, {conn_id!r}, max_workers=4)
""")


def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(staged):
    sbx = staged["sandbox"]
    planned = plan(RUN, staged["connector"])
    batch = max((b for bs in planned["batches"].values() for b in bs), key=lambda b: b["count"])
    opco = batch["opco"]
    sbx.set_rate_limit(25)            # slow enough to kill it in the middle
    code = KILLABLE.format(root=str(os.getcwd()), run=RUN, connector=staged["connector"], conn_id=batch["conn_id"])
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sbx.creations(opco, batch["siren"])["total"] < batch["count"] // 3:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    created_before = sbx.creations(opco, batch["siren"])["total"]
    assert 0 < created_before < batch["count"], "the kill must land mid-batch"
    sbx.set_rate_limit(0)
    summary = transmit_batch(RUN, staged["connector"], batch["conn_id"], sources=staged["sources"], max_workers=4,
                             retry_base=0.01)
    after = sbx.creations(opco, batch["siren"])
    assert after["duplicates"] == []
    sent = rows(staged["connector"], """SELECT count(*) FROM transmission WHERE conn_id = %s
                                      AND operation = 'DOSSIER' AND status = 'SENT'""", batch["conn_id"])[0][0]
    assert sent == after["total"] == batch["count"] - summary["deferred"] - summary["rejected"]
    assert summary["already_sent"] + summary["resolved_in_doubt"] >= created_before - 4


def test_dry_run_sends_nothing(staged):
    sbx = staged["sandbox"]
    planned = plan(RUN, staged["connector"])
    b = planned["batches"]["atlas"][0]
    summary = transmit_batch(RUN, staged["connector"], b["conn_id"], sources=staged["sources"], dry_run=True)
    assert summary["dry_run"] >= b["count"] - summary["deferred"] and summary["sent"] == 0
    assert sbx.creations("atlas")["total"] == 0


def test_forced_resend_needs_a_reason_and_is_kept_in_the_ledger(staged):
    _transmit_all(staged)
    numero = rows(staged["connector"], """SELECT numero_interne FROM transmission WHERE status = 'SENT'
                                        AND operation = 'DOSSIER' AND opco_code = 'atlas' LIMIT 1""")[0][0]
    with pytest.raises(ValueError, match="reason"):
        plan("manual__force", staged["connector"], force=[{"numero_interne": numero, "reason": " "}])
    # the next day's run: the dossier is unchanged, so not extracted again — forcing brings it in
    from cfa_opco.quality.gate import run_quality_gate

    extract("manual__force", staged["sources"], staged["connector"])
    run_quality_gate("manual__force", staged["connector"], write_reports=False, data_docs=False)
    planned = plan("manual__force", staged["connector"],
                   force=[{"numero_interne": numero, "reason": "OPCO a perdu le dossier", "by": "qualite"}])
    b = planned["batches"]["atlas"][0]
    summary = transmit_batch("manual__force", staged["connector"], b["conn_id"], sources=staged["sources"])
    assert summary["sent"] == 1
    ledger = rows(staged["connector"], """SELECT forced, force_reason FROM transmission
                                        WHERE numero_interne = %s AND operation = 'DOSSIER' ORDER BY id""", numero)
    assert ledger[-1][0] is True and "OPCO a perdu le dossier" in ledger[-1][1]


def test_an_unforeseen_error_on_one_dossier_leaves_it_in_doubt_and_the_batch_goes_on(staged):
    from cfa_opco.providers.opco.hooks.opco import OpcoHook

    planned = plan(RUN, staged["connector"])
    batch = max((b for bs in planned["batches"].values() for b in bs), key=lambda b: b["count"])
    victim = rows(staged["connector"], """SELECT numero_interne FROM transmission_plan WHERE run_id = %s
                                        AND conn_id = %s AND decision = 'ROUTED' AND nature = 'CONTRAT'
                                        ORDER BY numero_interne LIMIT 1""", RUN, batch["conn_id"])[0][0]

    class Broken(OpcoHook):   # a fault the code does not foresee, on one dossier
        def send_dossier(self, payload, **kw):
            if payload["numeroInterne"] == victim:
                raise RuntimeError("boom")
            return super().send_dossier(payload, **kw)

    first = transmit_batch(RUN, staged["connector"], batch["conn_id"], hook=OpcoHook(batch["conn_id"]),
                           send_hook=Broken(batch["conn_id"], max_attempts=1), max_workers=4)
    assert first["in_doubt"] == 1 and first["sent"] >= batch["count"] // 2
    status, message = rows(staged["connector"], """SELECT status, message FROM transmission
                                                 WHERE numero_interne = %s""", victim)[0]
    assert status == "PENDING" and "RuntimeError" in message
    again = transmit_batch(RUN, staged["connector"], batch["conn_id"], max_workers=4, retry_base=0.01)
    assert again["sent"] == 1 and again["in_doubt"] == 0     # read back (absent), then sent
    assert _creations(staged["sandbox"]).get(victim) == 1 and max(_creations(staged["sandbox"]).values()) == 1


def test_short_gil_slices_while_batches_run_then_restored():
    import threading

    from cfa_opco.transmission import _short_gil_slices

    before = sys.getswitchinterval()
    inside, release = threading.Event(), threading.Event()

    def batch():
        with _short_gil_slices():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=batch)
    t.start()
    inside.wait(5)
    with _short_gil_slices():            # a second batch in the same process
        assert sys.getswitchinterval() == 0.001
    assert sys.getswitchinterval() == 0.001   # the first one still runs
    release.set()
    t.join()
    assert sys.getswitchinterval() == before
