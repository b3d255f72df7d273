"""Chaos around a transmission batch (issue 13, point 3): the pieces the batch talks to die in the
middle of it — the OPCO's server (restarted with its persistence on), the connector's own
PostgreSQL (crash restart) — and the batch is resumed the way Airflow does it (the task's retry
runs it again). Each time: 0 duplicate creations at the OPCO, 0 dossier lost (each routed one
ends SENT once, or refused, or waiting with its reason)."""
from __future__ import annotations

import socket
import threading
import time

import psycopg2
import pytest

from cfa_opco.connector import migrate
from cfa_opco.extraction import extract
from cfa_opco.outbox import plan, transmit_batch
from cfa_opco.quality.gate import run_quality_gate
from cfa_opco.sandbox.testing import run_sandbox
from cfa_opco.stack import embedded_pg
from tests import transmission_env
from tests.helpers import rows
from tests.outbox.common import RUN


def _biggest_batch(connector: str) -> dict:
    planned = plan(RUN, connector)
    return max((b for bs in planned["batches"].values() for b in bs), key=lambda b: b["count"])


def _in_thread(fn) -> dict:
    """Run ``fn`` in a thread: {"thread", "result" | "error"} (a failed task is a retried task)."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as exc:   # noqa: BLE001 — the task failed: Airflow retries it
            box["error"] = exc
    box["thread"] = threading.Thread(target=target, daemon=True)
    box["thread"].start()
    return box


def _wait_created(sbx, batch: dict, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sbx.creations(batch["opco"], batch["siren"])["total"] < at_least:
        time.sleep(0.05)


def _assert_exactly_once(sbx, connector: str, batch: dict) -> None:
    after = sbx.creations(batch["opco"], batch["siren"])
    assert after["duplicates"] == [], after["duplicates"][:5]
    statuses = dict(rows(connector, """SELECT status, count(*) FROM (SELECT DISTINCT ON (numero_interne) status
                                       FROM transmission WHERE conn_id = %s AND operation = 'DOSSIER'
                                       ORDER BY numero_interne, id DESC) t GROUP BY 1""", batch["conn_id"]))
    assert statuses.get("PENDING", 0) == 0, statuses
    assert statuses.get("SENT", 0) == after["total"] > 0
    assert sum(statuses.values()) == batch["count"], (statuses, batch["count"])   # none lost


def test_the_opco_server_restarted_mid_batch_doubles_and_loses_nothing(sources, connector_dsn, monkeypatch, tmp_path):
    with run_sandbox(db=tmp_path / "opco.db", instant=True, rate_limit=25, overrides={"idempotency": False}) as sbx:
        transmission_env.apply(monkeypatch, transmission_env.opco_connection_env(
            sbx.port, extra_overrides={"rate_limit_per_second": 0}))
        extract(RUN, sources, connector_dsn)
        run_quality_gate(RUN, connector_dsn, reports_dir=tmp_path / "reports")
        batch = _biggest_batch(connector_dsn)
        run = _in_thread(lambda: transmit_batch(RUN, connector_dsn, batch["conn_id"], max_workers=4,
                                                retry_base=0.05))
        _wait_created(sbx, batch, batch["count"] // 3)
        at_crash = sbx.creations(batch["opco"], batch["siren"])["total"]
        sbx.kill()                       # a crash, answers in flight lost
        time.sleep(1.5)
        sbx.start()                      # same port, same database file
        run["thread"].join(300)
        assert 0 < at_crash < batch["count"], "the restart must land mid-batch"
        sbx.set_rate_limit(0)
        transmit_batch(RUN, connector_dsn, batch["conn_id"], max_workers=4, retry_base=0.01)   # the retry
        _assert_exactly_once(sbx, connector_dsn, batch)


@pytest.fixture()
def own_connector_server(tmp_path):
    """A PostgreSQL server of its own for the connector (durable settings, as in production),
    that the test may crash: {"dsn", "restart"}."""
    data = tmp_path / "pgdata"
    data.mkdir()
    if embedded_pg._as_root():          # initdb and postgres refuse root: the embedded server's user
        embedded_pg._prepare_root_user(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedded_pg._run([str(embedded_pg._bin("initdb")), "-D", str(data), "--auth=trust", "-U", "postgres",
                      "--locale=C.UTF-8"])
    ctl = [str(embedded_pg._bin("pg_ctl")), "-D", str(data), "-w", "-t", "30", "-l", str(data / "server.log"),
           "-o", f"-h 127.0.0.1 -p {port} -k {data}"]
    embedded_pg._run(ctl + ["start"])
    admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE connector")
    admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:{port}/connector"
    migrate(dsn)

    def restart():   # -m immediate: every backend killed, crash recovery at start
        embedded_pg._run(ctl + ["-m", "immediate", "restart"])
    yield {"dsn": dsn, "restart": restart}
    embedded_pg._run(ctl + ["-m", "immediate", "stop"], check=False)


def test_the_connector_database_restarted_mid_batch_doubles_and_loses_nothing(sandbox, sources, own_connector_server,
                                                                              monkeypatch, tmp_path):
    sandbox.patch_settings(idempotency=False)
    transmission_env.apply(monkeypatch, transmission_env.opco_connection_env(
        sandbox.port, extra_overrides={"rate_limit_per_second": 0}))
    connector = own_connector_server["dsn"]
    extract(RUN, sources, connector)
    run_quality_gate(RUN, connector, reports_dir=tmp_path / "reports")
    batch = _biggest_batch(connector)
    sandbox.set_rate_limit(25)
    run = _in_thread(lambda: transmit_batch(RUN, connector, batch["conn_id"], max_workers=4, retry_base=0.05))
    _wait_created(sandbox, batch, batch["count"] // 3)
    own_connector_server["restart"]()
    run["thread"].join(300)
    created_before = sandbox.creations(batch["opco"], batch["siren"])["total"]
    assert 0 < created_before < batch["count"], "the restart must land mid-batch"
    assert "error" in run, "a batch whose database went away fails (and is retried)"
    sandbox.set_rate_limit(0)
    transmit_batch(RUN, connector, batch["conn_id"], max_workers=4, retry_base=0.01)   # the retry
    _assert_exactly_once(sandbox, connector, batch)
