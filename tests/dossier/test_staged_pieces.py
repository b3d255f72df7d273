"""The batch's documents are frozen at extraction (issue 11, point 2): bytes and SHA-256 read
from the ERP once, when the dossiers are staged; what a send loads comes from the
connector's database only, whatever happens in the ERP afterwards."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest

from cfa_opco.db.connect import connection
from cfa_opco.dossier.pieces import copy_staged_pieces, load_staged_pieces, stage_pieces
from cfa_opco.extraction import extract
from tests.helpers import rows


@pytest.fixture()
def own_files(sources, tmp_path):
    """The sources with erp_est's files copied to a folder of this test's own: the test
    may delete or change them without touching the session's seeded ERP."""
    est = next(s for s in sources if s.id == "erp_est")
    root = tmp_path / "erp_est"
    shutil.copytree(est.files_root, root)
    return [dataclasses.replace(s, files_root=root) if s.id == "erp_est" else s for s in sources]


def _keys(dsn: str, run_id: str, source_id: str | None = None) -> list[tuple[str, str]]:
    return [tuple(r) for r in rows(dsn, "SELECT source_id, numero_interne FROM staged_dossier WHERE run_id = %s "
                                        "AND (%s::text IS NULL OR source_id = %s) ORDER BY 1, 2",
                                   run_id, source_id, source_id)]


def _load(dsn: str, run_id: str, keys) -> dict:
    with connection(dsn) as conn:
        return load_staged_pieces(conn, run_id, keys)


def _est_file_of(pieces: dict) -> tuple[tuple[str, str], dict]:
    """One erp_est dossier with a readable document, and that document."""
    key = next(k for k in sorted(pieces) if k[0] == "erp_est" and pieces[k][0]["content"] is not None)
    return key, pieces[key][0]


def test_extraction_freezes_each_document_with_its_sha256(own_files, connector_dsn):
    summary = extract("run-1", own_files, connector_dsn)
    assert summary["failed_sources"] == [] and summary["pieces_unreadable"] == 0
    main, est = (next(s for s in own_files if s.id == i) for i in ("erp_main", "erp_est"))

    # erp_main keeps its documents as bytes: the hash is the ERP's own sha256 of them
    in_erp = dict(rows(main.target, """SELECT c.numero_interne, encode(sha256(p.contenu), 'hex')
                                       FROM piece p JOIN contrat c ON c.id = p.contrat_id"""))
    staged = dict(rows(connector_dsn, "SELECT numero_interne, sha256 FROM staged_piece "
                                      "WHERE run_id = 'run-1' AND source_id = 'erp_main'"))
    contracts = {k[1] for k in _keys(connector_dsn, "run-1", "erp_main")}
    assert staged == {n: h for n, h in in_erp.items() if n in contracts} and len(staged) > 1000
    assert summary["by_source"]["erp_main"]["pieces_staged"] == len(staged)

    # erp_est keeps files: the hash is the file's, and load_staged_pieces gives the bytes
    # in the shape the transmitter sends
    pieces = _load(connector_dsn, "run-1", _keys(connector_dsn, "run-1"))
    est_pieces = {k: v for k, v in pieces.items() if k[0] == "erp_est"}
    assert len(est_pieces) == summary["by_source"]["erp_est"]["pieces_staged"] > 100
    for (_, numero), [piece] in est_pieces.items():
        on_disk = (est.files_root / "conventions" / f"convention_{numero}.pdf").read_bytes()
        assert piece["content"] == on_disk and piece["sha256"] == hashlib.sha256(on_disk).hexdigest()
        assert piece["size"] == len(on_disk) and piece["error"] is None
        assert (piece["type_piece"], piece["nom_fichier"], piece["type_mime"]) == (
            "CONVENTION_FORMATION", f"convention_{numero}.pdf", "application/pdf")
    assert all(isinstance(p["content"], bytes) for docs in pieces.values() for p in docs)

    # avenants carry no documents; a dossier without any is absent from the answer
    assert rows(connector_dsn, """SELECT count(*) FROM staged_piece p JOIN staged_dossier d
                                  USING (run_id, source_id, numero_interne) WHERE d.nature = 'AVENANT'""")[0][0] == 0
    assert len(pieces) < len(_keys(connector_dsn, "run-1"))

    # a re-extraction of the run stages its documents again, once
    again = extract("run-1", own_files, connector_dsn, reextract=True)
    assert again["pieces_staged"] == summary["pieces_staged"]
    assert rows(connector_dsn, "SELECT count(*) FROM staged_piece WHERE run_id = 'run-1'")[0][0] == \
        summary["pieces_staged"]


def test_a_file_deleted_or_replaced_after_extraction_changes_nothing_that_is_sent(own_files, connector_dsn):
    """The point: a send never reads the ERP."""
    extract("run-1", own_files, connector_dsn)
    keys = _keys(connector_dsn, "run-1")
    before = _load(connector_dsn, "run-1", keys)
    (src, deleted), piece = _est_file_of(before)
    root = next(s for s in own_files if s.id == "erp_est").files_root
    (root / "conventions" / piece["nom_fichier"]).unlink()
    replaced = next(k for k in sorted(before) if k[0] == "erp_est" and k[1] != deleted)
    (root / "conventions" / f"convention_{replaced[1]}.pdf").write_bytes(b"%PDF-1.4 another document")
    assert _load(connector_dsn, "run-1", keys) == before
    assert before[(src, deleted)][0]["content"] == piece["content"] is not None


def test_a_file_missing_at_extraction_is_an_error_row_and_its_dossier_is_staged(own_files, connector_dsn):
    est = next(s for s in own_files if s.id == "erp_est")
    missing = sorted((est.files_root / "conventions").iterdir())[0]
    numero = missing.stem.removeprefix("convention_")
    missing.unlink()
    summary = extract("run-1", own_files, connector_dsn)
    assert summary["failed_sources"] == []
    assert summary["pieces_unreadable"] == summary["by_source"]["erp_est"]["pieces_unreadable"] == 1
    assert ("erp_est", numero) in _keys(connector_dsn, "run-1", "erp_est")
    [piece] = _load(connector_dsn, "run-1", [("erp_est", numero)])[("erp_est", numero)]
    assert piece["content"] is None and piece["sha256"] is None and piece["size"] is None
    # the reason names the path as the ERP gives it, never the server's folders
    assert piece["error"] == f"fichier introuvable : conventions/{missing.name}"
    assert str(est.files_root) not in piece["error"]


def test_paths_outside_the_files_root_and_documents_without_bytes_or_path_are_errors(own_files, connector_dsn):
    est = next(s for s in own_files if s.id == "erp_est")
    weird = dataclasses.replace(est, pieces_sql=f"""
        SELECT numero_interne, piece_ref, type_piece, nom_fichier, type_mime,
               CASE row_number() OVER (ORDER BY numero_interne) WHEN 4 THEN 'du texte' END AS contenu,
               CASE row_number() OVER (ORDER BY numero_interne) WHEN 1 THEN '../../' || chemin
                                                                 WHEN 2 THEN NULL
                                                                 WHEN 3 THEN '/etc/hostname'
                                                                 ELSE chemin END AS chemin
        FROM ({est.pieces_sql}) q""")
    summary = extract("run-1", [weird], connector_dsn)
    assert summary["failed_sources"] == [] and summary["pieces_unreadable"] == 4
    errors = sorted(e for (e,) in rows(connector_dsn, "SELECT error FROM staged_piece WHERE error IS NOT NULL"))
    assert errors[0].startswith("chemin hors du dossier des fichiers de la source : ../../conventions/")
    assert errors[1] == "chemin hors du dossier des fichiers de la source : /etc/hostname"
    assert errors[2].startswith("contenu du document non binaire dans l'ERP (bytea attendu)")
    assert errors[3] == "ni contenu ni chemin de fichier dans l'ERP"


def test_a_failing_documents_query_fails_its_source_only(own_files, connector_dsn):
    """Its dossiers are not staged without their documents: the source is reported failed
    (extracted again at the next run) and the other source goes on."""
    broken = [dataclasses.replace(s, pieces_sql="SELECT no_such_column FROM piece WHERE %(numeros)s IS NOT NULL")
              if s.id == "erp_main" else s for s in own_files]
    summary = extract("run-1", broken, connector_dsn)
    assert summary["failed_sources"] == ["erp_main"]
    assert summary["by_source"]["erp_main"]["error"].startswith(
        "PiecesQueryError: documents query of source 'erp_main': UndefinedColumn")
    assert _keys(connector_dsn, "run-1", "erp_main") == []
    assert summary["by_source"]["erp_est"]["pieces_staged"] > 0 and summary["extracted"] > 0


def test_stage_pieces_on_a_connection_replaces_what_was_staged(own_files, connector_dsn):
    extract("run-1", own_files, connector_dsn)
    main = next(s for s in own_files if s.id == "erp_main")
    numeros = [n for _, n in _keys(connector_dsn, "run-1", "erp_main")][:50]
    before = _load(connector_dsn, "run-1", [("erp_main", n) for n in numeros])
    with connection(connector_dsn) as conn:
        counts = stage_pieces(conn, "run-1", main, numeros + ["", None])
    assert counts == {"staged": sum(len(v) for v in before.values()), "unreadable": 0}
    assert _load(connector_dsn, "run-1", [("erp_main", n) for n in numeros]) == before
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        assert stage_pieces(cur, "run-1", dataclasses.replace(main, pieces_sql=None), numeros) == \
            {"staged": 0, "unreadable": 0}


def test_copy_staged_pieces_brings_a_forced_dossiers_documents_into_the_run(own_files, connector_dsn):
    extract("run-1", own_files, connector_dsn)
    first = _load(connector_dsn, "run-1", _keys(connector_dsn, "run-1"))
    (_, forced), _ = _est_file_of(first)
    main_forced = next(k for k in sorted(first) if k[0] == "erp_main")[1]
    # everything sent: the next run's batch is empty, the forced dossiers come from run-1
    # (as the plan brings them in: staged_dossier rows copied, change_kind FORCED)
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        cur.execute("""UPDATE dossier_registry r SET transmitted_hash = s.content_hash FROM staged_dossier s
                       WHERE s.run_id = 'run-1' AND s.source_id = r.source_id
                         AND s.numero_interne = r.numero_interne""")
    assert extract("run-2", own_files, connector_dsn)["extracted"] == 0
    (next(s for s in own_files if s.id == "erp_est").files_root / "conventions"
     / f"convention_{forced}.pdf").unlink()   # gone from the ERP since: the frozen copy is what leaves
    numeros = [forced, main_forced, "NO-SUCH-DOSSIER"]
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position) "
                    "FROM information_schema.columns WHERE table_name = 'staged_dossier' "
                    "AND column_name NOT IN ('run_id', 'change_kind')")
        cols = cur.fetchone()[0]
        cur.execute(f"""INSERT INTO staged_dossier (run_id, change_kind, {cols})
                        SELECT 'run-2', 'FORCED', {cols} FROM staged_dossier
                        WHERE run_id = 'run-1' AND numero_interne = ANY(%s)""", (numeros,))
        copied = copy_staged_pieces(cur, "run-2", numeros)
        assert copy_staged_pieces(cur, "run-2", numeros) == 0   # once
    keys = [("erp_est", forced), ("erp_main", main_forced)]
    assert copied == sum(len(first[k]) for k in keys) >= 2
    assert _load(connector_dsn, "run-2", keys) == {k: first[k] for k in keys}
    assert rows(connector_dsn, """SELECT count(*) FROM staged_piece a JOIN staged_piece b
                                  USING (source_id, numero_interne, position)
                                  WHERE a.run_id = 'run-1' AND b.run_id = 'run-2'
                                    AND a.staged_at = b.staged_at""")[0][0] == copied
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        assert copy_staged_pieces(cur, "run-2", []) == 0
