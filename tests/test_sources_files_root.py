"""The ERPs' files are found from a configured location, not from the folder a task runs in:
config/sources.yaml names them ``{erp_files}/<source>``, which follows CFA_ERP_FILES_DIR (default
var/erp_files). A Celery worker with its own var/ finds the same files as the one that seeded them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfa_opco import settings
from cfa_opco.sources import SourceConfigError, load_sources

PROJECT = Path(__file__).resolve().parent.parent


def test_the_project_sources_name_their_files_under_the_configured_location(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, "ERP_FILES_DIR", tmp_path / "erp-share")
    roots = {s.id: s.files_root for s in load_sources()}
    assert roots == {"erp_main": tmp_path / "erp-share" / "erp_main", "erp_est": tmp_path / "erp-share" / "erp_est"}


def test_cfa_erp_files_dir_moves_the_files_root_for_a_process_with_its_own_var(tmp_path):
    code = ("from cfa_opco.sources import load_sources; "
            "print('\\n'.join(f'{s.id}={s.files_root}' for s in load_sources()))")
    env = {**os.environ, "CFA_VAR_DIR": str(tmp_path / "worker-var"), "CFA_ERP_FILES_DIR": str(tmp_path / "share")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert dict(line.split("=", 1) for line in out.split()) == {
        "erp_main": str(tmp_path / "share" / "erp_main"), "erp_est": str(tmp_path / "share" / "erp_est")}
    env.pop("CFA_ERP_FILES_DIR")   # the default: the process's own var/erp_files
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert f"erp_est={tmp_path / 'worker-var' / 'erp_files' / 'erp_est'}" in out.split()


def test_relative_and_absolute_files_roots_still_work_and_unknown_placeholders_are_named(tmp_path):
    (tmp_path / "q.sql").write_text("SELECT 1")
    doc = tmp_path / "sources.yaml"
    doc.write_text(f"""sources:
  - {{id: a, conn_id: c_a, dossiers_sql: q.sql, files_root: files/a}}
  - {{id: b, conn_id: c_b, dossiers_sql: q.sql, files_root: {tmp_path / 'abs'}}}
""")
    assert [s.files_root for s in load_sources(doc)] == [tmp_path / "files" / "a", tmp_path / "abs"]
    doc.write_text("sources:\n  - {id: a, conn_id: c_a, dossiers_sql: q.sql, files_root: '{erp_share}/a'}\n")
    with pytest.raises(SourceConfigError, match=r"unknown placeholder.*\{erp_files\}"):
        load_sources(doc)
