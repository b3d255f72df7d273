"""SQLite persistence and the instruction engine of the OPCO sandbox.

Times are integer microseconds since the epoch (UTC) on the sandbox's *virtual* clock
(real time + an offset that tests may advance). Every dossier's state transitions are
computed when it is created (and re-planned when it is completed, ruptured or paid), and
stored as rows ``(etat, t, t_next)``: the state at time *now* is the last row with
``t <= now``; a dossier "changed state in [a, b)" when one of its rows has ``a <= t < b``
and the paged list shows each dossier once, at its latest change in the window
(``t < b <= t_next``). No background thread moves states."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

from . import invoicing
from .config import OpcoSettings, npec_for

INF = 1 << 62
US = 1_000_000
UTC = dt.timezone.utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS templates (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dossiers (
  id INTEGER PRIMARY KEY,
  opco TEXT NOT NULL, siren TEXT NOT NULL, numero_interne TEXT NOT NULL,
  numero_externe TEXT NOT NULL, numero_deca TEXT NOT NULL,
  content_hash TEXT NOT NULL, payload TEXT, template_id INTEGER,
  version TEXT NOT NULL, created_t INTEGER NOT NULL, instruction_t INTEGER NOT NULL,
  type_contrat INTEGER, motifs TEXT, requires_conv INTEGER NOT NULL, complete_t INTEGER,
  npec REAL, rupture TEXT, employeur_siret TEXT
);
CREATE INDEX IF NOT EXISTS ix_dossiers_ni ON dossiers (opco, siren, numero_interne);
CREATE INDEX IF NOT EXISTS ix_dossiers_ni2 ON dossiers (opco, numero_interne);
CREATE INDEX IF NOT EXISTS ix_dossiers_deca ON dossiers (opco, numero_deca);
CREATE TABLE IF NOT EXISTS transitions (
  id INTEGER PRIMARY KEY, dossier_id INTEGER NOT NULL,
  opco TEXT NOT NULL, siren TEXT NOT NULL, numero_interne TEXT NOT NULL,
  etat TEXT NOT NULL, t INTEGER NOT NULL, t_next INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_tr_window ON transitions (opco, siren, t, numero_interne, dossier_id, t_next);
CREATE INDEX IF NOT EXISTS ix_tr_dossier ON transitions (dossier_id, t);
CREATE TABLE IF NOT EXISTS documents (
  id TEXT PRIMARY KEY, opco TEXT, siren TEXT, type_fichier TEXT, objets TEXT,
  filename TEXT, content_type TEXT, size INTEGER, sha256 TEXT, created_t INTEGER);
CREATE TABLE IF NOT EXISTS conventions (
  id TEXT PRIMARY KEY, opco TEXT, siren TEXT, dossier_id INTEGER, payload TEXT, created_t INTEGER);
CREATE TABLE IF NOT EXISTS certificats (
  id TEXT PRIMARY KEY, opco TEXT, siren TEXT, dossier_id INTEGER, payload TEXT, created_t INTEGER);
CREATE TABLE IF NOT EXISTS factures (
  id INTEGER PRIMARY KEY, opco TEXT NOT NULL, siren TEXT NOT NULL,
  numero_interne_facture TEXT NOT NULL, reference_cfa TEXT, dossier_id INTEGER NOT NULL,
  echeance INTEGER NOT NULL, montant REAL NOT NULL, content_hash TEXT NOT NULL,
  payload TEXT NOT NULL, created_t INTEGER NOT NULL, regle_t INTEGER NOT NULL, issue TEXT);
CREATE INDEX IF NOT EXISTS ix_factures_ni ON factures (opco, siren, numero_interne_facture);
CREATE INDEX IF NOT EXISTS ix_factures_dossier ON factures (dossier_id);
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, opco TEXT, client_id TEXT, expires_t INTEGER);
CREATE TABLE IF NOT EXISTS stats (opco TEXT, kind TEXT, k TEXT, v INTEGER, PRIMARY KEY (opco, kind, k));
"""


def canonical_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def iso(t_us: int | None) -> str | None:
    if t_us is None:
        return None
    return dt.datetime.fromtimestamp(t_us / US, UTC).isoformat(timespec="microseconds")


def iso_date(t_us: int) -> str:
    return dt.datetime.fromtimestamp(t_us / US, UTC).date().isoformat()


def to_us(d: dt.datetime) -> int:
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp()) * US + d.microsecond


def dept3(code_postal: str | None) -> str:
    cp = (code_postal or "")[:5]
    if len(cp) < 2 or not cp[:2].isdigit():
        return "000"
    if cp.startswith("20"):
        return "02A" if cp[:3] in ("200", "201") else "02B"
    if cp.startswith("97") and len(cp) >= 3:
        return cp[:3]
    return "0" + cp[:2]


def make_deca(payload: dict, dossier_id: int) -> str:
    try:
        cp = payload["organismeFormation"]["adresse"]["codePostal"]
    except (KeyError, TypeError):
        cp = None
    try:
        ym = payload["contrat"]["dateDebutContrat"][:7].replace("-", "")
        if len(ym) != 6 or not ym.isdigit():
            raise ValueError
    except (KeyError, TypeError, ValueError):
        ym = "000000"
    return f"{dept3(cp)}{ym}{dossier_id % 1_000_000:06d}"


def add_years(d: dt.date, n: int) -> dt.date:
    try:
        return d.replace(year=d.year + n)
    except ValueError:  # 29 February
        return d.replace(year=d.year + n, day=28)


def add_months(d: dt.date, n: int) -> dt.date:
    m = d.month - 1 + n
    y, m = d.year + m // 12, m % 12 + 1
    for day in (d.day, 30, 29, 28):
        try:
            return dt.date(y, m, day)
        except ValueError:
            continue
    raise ValueError(d)


def age_at(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def schedule(payload: dict, npec: float | None) -> list[dict]:
    """Payment schedule: per contract year (prorated by days for a partial last year),
    50 % at the year's start and 50 % six months later (one échéance when the year is
    shorter than 6 months)."""
    if not npec:
        return []
    try:
        c = payload["contrat"]
        deb = dt.date.fromisoformat(c["dateDebutContrat"])
        fin = dt.date.fromisoformat(c["dateFinContrat"])
    except (KeyError, TypeError, ValueError):
        return []
    out: list[dict] = []
    k = 0
    start = deb
    while start <= fin and k < 10:
        end = min(add_years(deb, k + 1) - dt.timedelta(days=1), fin)
        days = (end - start).days + 1
        amount = round(npec * min(1.0, days / 365.0), 2)
        mid = add_months(start, 6)
        if mid <= end:
            a1 = round(amount / 2, 2)
            out.append({"dateEcheance": start.isoformat(), "montant": a1})
            out.append({"dateEcheance": mid.isoformat(), "montant": round(amount - a1, 2)})
        else:
            out.append({"dateEcheance": start.isoformat(), "montant": amount})
        k += 1
        start = add_years(deb, k)
    for i, e in enumerate(out, 1):
        e["numero"] = i
    return out


class NotFound(Exception):
    pass


class Rejected(Exception):
    """422 with erreurs."""

    def __init__(self, errors: list[dict], status: int = 422):
        super().__init__(errors)
        self.errors = errors
        self.status = status


class Store:
    def __init__(self, db_path: str | Path):
        self.path = str(db_path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  cached_statements=512)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-65536")
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(factures)")}
        if "issue" not in cols:   # a database written before invoices had their own instruction
            self.db.execute("ALTER TABLE factures ADD COLUMN issue TEXT")
        self.lock = threading.RLock()  # the server runs on one event loop; guards seeding from threads
        row = self.db.execute("SELECT v FROM meta WHERE k='clock_offset_us'").fetchone()
        self.clock_offset_us = int(row[0]) if row else 0
        self.next_id = (self.db.execute("SELECT IFNULL(MAX(id),0) FROM dossiers").fetchone()[0]) + 1
        self.templates: dict[int, str] = {}
        # in-memory counters, flushed by flush_stats()
        self.stats: dict[tuple[str, str, str], int] = {
            (o, k, kk): v for o, k, kk, v in self.db.execute("SELECT opco, kind, k, v FROM stats")}
        self.stats_dirty: set[tuple[str, str, str]] = set()
        self.version = 0            # bumped by every write to transitions (etats cache)
        self._etats_cache: OrderedDict = OrderedDict()

    # ---- clock -------------------------------------------------------------------
    def now(self) -> int:
        return time.time_ns() // 1000 + self.clock_offset_us

    def set_clock_offset(self, offset_us: int) -> None:
        self.version += 1
        self.clock_offset_us = int(offset_us)
        self.db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('clock_offset_us', ?)",
                        (str(self.clock_offset_us),))

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.now() / US, UTC).date()

    # ---- counters ----------------------------------------------------------------
    def bump(self, opco: str, kind: str, k: str, n: int = 1) -> None:
        key = (opco, kind, k)
        self.stats[key] = self.stats.get(key, 0) + n
        self.stats_dirty.add(key)

    def flush_stats(self) -> None:
        if not self.stats_dirty:
            return
        rows = [(o, k, kk, self.stats[(o, k, kk)]) for (o, k, kk) in self.stats_dirty]
        self.stats_dirty = set()
        self.db.executemany("INSERT OR REPLACE INTO stats (opco, kind, k, v) VALUES (?,?,?,?)", rows)

    def close(self) -> None:
        self.flush_stats()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.db.close()

    def reset(self) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            for table in ("dossiers", "transitions", "documents", "conventions", "certificats",
                          "factures", "tokens", "stats", "meta", "templates"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("COMMIT")
            self.clock_offset_us = 0
            self.version += 1
            self._etats_cache.clear()
            self.next_id = 1
            self.stats.clear()
            self.stats_dirty.clear()
            self.templates.clear()

    # ---- transitions -------------------------------------------------------------
    def _insert_plan(self, dossier_id: int, opco: str, siren: str, ni: str,
                     plan: list[tuple[str, int]]) -> None:
        self.version += 1
        rows = []
        for i, (etat, t) in enumerate(plan):
            t_next = plan[i + 1][1] if i + 1 < len(plan) else INF
            rows.append((dossier_id, opco, siren, ni, etat, t, t_next))
        self.db.executemany(
            "INSERT INTO transitions (dossier_id, opco, siren, numero_interne, etat, t, t_next) "
            "VALUES (?,?,?,?,?,?,?)", rows)

    def _append(self, d: sqlite3.Row | tuple, etat: str, t: int, drop_after: int | None = None) -> None:
        did, opco, siren, ni = d[0], d[1], d[2], d[3]
        self.version += 1
        if drop_after is not None:
            self.db.execute("DELETE FROM transitions WHERE dossier_id=? AND t>?", (did, drop_after))
        self.db.execute("UPDATE transitions SET t_next=? WHERE id=(SELECT id FROM transitions "
                        "WHERE dossier_id=? ORDER BY t DESC, id DESC LIMIT 1)", (t, did))
        self.db.execute(
            "INSERT INTO transitions (dossier_id, opco, siren, numero_interne, etat, t, t_next) "
            "VALUES (?,?,?,?,?,?,?)", (did, opco, siren, ni, etat, t, INF))

    def history(self, dossier_id: int, now: int) -> list[tuple[str, int]]:
        return self.db.execute("SELECT etat, t FROM transitions WHERE dossier_id=? AND t<=? "
                               "ORDER BY t, id", (dossier_id, now)).fetchall()

    def _plan_tail(self, dossier_id: int) -> list[tuple[str, int]]:
        return self.db.execute("SELECT etat, t FROM transitions WHERE dossier_id=? ORDER BY t, id",
                               (dossier_id,)).fetchall()

    # ---- dossiers ----------------------------------------------------------------
    D_COLS = ("id, opco, siren, numero_interne, numero_externe, numero_deca, content_hash, payload, "
              "template_id, version, created_t, instruction_t, type_contrat, motifs, requires_conv, "
              "complete_t, npec, rupture, employeur_siret")

    def find_dossier(self, opco: str, siren: str, ni: str):
        return self.db.execute(f"SELECT {self.D_COLS} FROM dossiers WHERE opco=? AND siren=? AND "
                               f"numero_interne=? ORDER BY id DESC LIMIT 1", (opco, siren, ni)).fetchone()

    def payload_of(self, row) -> dict:
        if row[7] is not None:
            return json.loads(row[7])
        tid = row[8]
        tpl = self.templates.get(tid)
        if tpl is None:
            tpl = self.templates[tid] = self.db.execute(
                "SELECT payload FROM templates WHERE id=?", (tid,)).fetchone()[0]
        p = json.loads(tpl)
        p["numeroInterne"] = row[3]
        return p

    def motifs_for(self, opco: str, facts: dict, s: OpcoSettings, idcc_table: dict[str, str],
                   opco_names: dict[str, str]) -> tuple[list[dict], float | None]:
        motifs = []
        idcc = facts.get("codeIdcc")
        owner = idcc_table.get(idcc or "")
        if idcc in ("9999", "9998") or owner is None:
            motifs.append({"code": "IDCC_INCONNU", "message":
                           f"IDCC {idcc}: OPCO de l'employeur non déterminable (IDCC absent, 9998 ou 9999)"})
        elif owner != opco:
            motifs.append({"code": "IDCC_AUTRE_OPCO", "message":
                           f"IDCC {idcc} relève de {opco_names.get(owner, owner.upper())}, pas de "
                           f"{opco_names.get(opco, opco)}"})
        birth, start = facts.get("dateNaissance"), facts.get("dateDebutContrat")
        if birth and start:
            age = age_at(birth, start)
            if age > s.age_max and not (facts.get("handicap") or facts.get("sportifDeHautNiveau")
                                        or facts.get("projetCreationEntreprise")):
                motifs.append({"code": "AGE_MAX", "message":
                               f"apprenti âgé de {age} ans au début du contrat (plus de {s.age_max} ans) "
                               f"sans handicap, sportif de haut niveau ni projet de création d'entreprise"})
        npec = npec_for(s, facts.get("rncp") or "")
        if npec is None:
            motifs.append({"code": "NPEC_ABSENT", "message":
                           f"{facts.get('rncp')}: aucun niveau de prise en charge (NPEC) pour cet OPCO"})
        return motifs, npec

    def create_dossier(self, opco: str, siren: str, version: str, payload: dict, facts: dict,
                       s: OpcoSettings, idcc_table: dict, opco_names: dict,
                       raw: str | None = None) -> tuple[int, dict]:
        """Returns (http status, summary). Raises Rejected (409/422)."""
        ni = facts["numeroInterne"]
        canon = facts.get("_canon")
        h = hashlib.sha256(canon).hexdigest() if canon is not None else canonical_hash(payload)
        with self.lock:
            if s.idempotency:
                ex = self.db.execute("SELECT id, content_hash FROM dossiers WHERE opco=? AND siren=? AND "
                                     "numero_interne=? ORDER BY id DESC LIMIT 1", (opco, siren, ni)).fetchone()
                if ex is not None:
                    if ex[1] == h:
                        self.bump(opco, "dup", "same_content")
                        row = self.db.execute(f"SELECT {self.D_COLS} FROM dossiers WHERE id=?", (ex[0],)).fetchone()
                        return 200, self.summary(row, self.now())
                    self.bump(opco, "dup", "conflict")
                    raise Rejected([{"code": "NUMERO_INTERNE_EXISTANT", "champ": "numeroInterne",
                                     "message": f"le dossier {ni} existe déjà avec un contenu différent"}], 409)
            t_type = facts.get("typeContratApp")
            if t_type is not None and 31 <= t_type <= 38:
                prev = self.db.execute("SELECT id FROM dossiers WHERE opco=? AND siren=? AND numero_deca=? LIMIT 1",
                                       (opco, siren, facts.get("numeroContratPrecedent"))).fetchone()
                if prev is None:
                    raise Rejected([{"code": "CONTRAT_PRECEDENT_INCONNU", "champ": "contrat.numeroContratPrecedent",
                                     "message": f"aucun contrat {facts.get('numeroContratPrecedent')} connu de cet "
                                                f"OPCO pour ce SIREN"}])
            motifs, npec = self.motifs_for(opco, facts, s, idcc_table, opco_names)
            is_av = t_type is not None and 31 <= t_type <= 38
            requires = s.avenant_requires_convention if is_av else s.require_convention
            t0 = self.now()
            t1 = t0 + s.d_instruction_us
            plan = [("TRANSMIS", t0), ("EN_COURS_INSTRUCTION", t1)]
            if motifs:
                plan.append(("REFUSE", t1 + s.d_decision_us))
            elif not requires:
                plan.append(("ENGAGE", t1 + s.d_decision_us))
            # a second dossier for the same (OPCO, SIREN, numeroInterne): an exactly-once violation
            # (only possible with idempotency off, the sandbox's stand-in for an OPCO that does not dedupe)
            dup = not s.idempotency and self.db.execute(
                "SELECT 1 FROM dossiers WHERE opco=? AND siren=? AND numero_interne=? LIMIT 1",
                (opco, siren, ni)).fetchone() is not None
            did = self.next_id
            deca = make_deca(payload, did)
            ext = f"{opco.upper()}-{did:09d}"
            self.db.execute("BEGIN")
            try:
                self.db.execute(
                    f"INSERT INTO dossiers ({self.D_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (did, opco, siren, ni, ext, deca, h,
                     raw if raw is not None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
                     None, version,
                     t0, t1, t_type, json.dumps(motifs, ensure_ascii=False) if motifs else None,
                     int(requires), None, 0.0 if is_av else npec, None, facts.get("employeur_siret")))
                self._insert_plan(did, opco, siren, ni, plan)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.next_id = did + 1
            self.bump(opco, "created", "dossiers")
            if dup:
                self.bump(opco, "dup", "created")
            return 201, {"numeroInterne": ni, "numeroExterne": ext, "numeroDeca": deca,
                         "etat": "TRANSMIS", "dateEtat": iso(t0)}

    def state_of(self, row, now: int) -> tuple[str, int, list[tuple[str, int]]]:
        hist = self.history(row[0], now)
        etat, t = hist[-1] if hist else ("TRANSMIS", row[10])
        return etat, t, hist

    def _anomalies(self, row, etat: str) -> list[dict]:
        if etat == "EN_COURS_INSTRUCTION" and row[14] and row[15] is None and row[13] is None:
            return [{"code": "PIECE_MANQUANTE", "piece": "CONVENTION_FORMATION",
                     "message": "convention de formation manquante : joindre un document "
                                "CONVENTION_FORMATION (POST /v1/documents) ou POST /v1/conventions"}]
        return []

    def summary(self, row, now: int, etat_t: tuple[str, int] | None = None) -> dict:
        if etat_t is None:
            etat, t, _ = self.state_of(row, now)
        else:
            etat, t = etat_t
        return {"numeroInterne": row[3], "numeroExterne": row[4], "numeroDeca": row[5],
                "etat": etat, "dateEtat": iso(t)}

    def status_item(self, row, etat: str, t: int) -> dict:
        out = self.summary(row, 0, (etat, t))
        out["motifs"] = json.loads(row[13]) if (etat == "REFUSE" and row[13]) else []
        out["anomalies"] = self._anomalies(row, etat)
        return out

    def full_dossier(self, row, now: int, certificat_requis: bool = False) -> dict:
        etat, t, hist = self.state_of(row, now)
        out = self.payload_of(row)
        out.update(self.status_item(row, etat, t))
        out["version"] = row[9]
        out["historique"] = [{"etat": e, "date": iso(tt)} for e, tt in hist]
        engage_t = next((tt for e, tt in hist if e == "ENGAGE"), None)
        out["engagement"] = None
        out["echeances"] = []
        if engage_t is not None:
            ech = self.echeances(row, now)
            out["engagement"] = {"montantTotal": round(sum(e["montant"] for e in ech), 2),
                                 "dateEngagement": iso_date(engage_t)}
            if certificat_requis:     # AFDAS: each échéance is invoiced once its certificat is received
                got = self.certificats_of(row[0])
                for e in ech:
                    e["certificatRequis"] = self.certificat_type(ech, e["numero"])
                    e["certificatRecu"] = e["numero"] in got
            out["echeances"] = ech
        out["rupture"] = json.loads(row[17]) if row[17] else None
        return out

    def echeances(self, row, now: int) -> list[dict]:
        payload = self.payload_of(row)
        ech = schedule(payload, row[16])
        rupture = json.loads(row[17]) if row[17] else None
        fact: dict[int, bool] = {}   # échéance -> paid (a rejected invoice leaves it to invoice again)
        for e, regle_t, montant, issue in self.db.execute(
                "SELECT echeance, regle_t, montant, issue FROM factures WHERE dossier_id=? ORDER BY id", (row[0],)):
            state = invoicing.etat(invoicing.decode(issue, montant), regle_t, now)
            if state != invoicing.REJETE:
                fact[e] = state == invoicing.REGLE
        for e in ech:
            if e["numero"] in fact:
                e["etat"] = "REGLEE" if fact[e["numero"]] else "FACTUREE"
            elif rupture and e["dateEcheance"] > rupture["dateRupture"]:
                e["etat"] = "ANNULEE"
            else:
                e["etat"] = "A_FACTURER"
        return ech

    def liste(self, opco: str, siren: str, nis: list[str]) -> tuple[list[dict], list[str]]:
        now = self.now()
        found, missing = [], []
        for ni in nis:
            row = self.find_dossier(opco, siren, ni)
            if row is None:
                missing.append(ni)
                continue
            etat, t, _ = self.state_of(row, now)
            found.append(self.status_item(row, etat, t))
        return found, missing

    def _window(self, opco: str, siren: str, lo: int, fin: int | None, now: int) -> list[tuple]:
        """Ordered (t, numero_interne, dossier_id, etat) of the dossiers whose latest state
        change in [lo, min(fin, now]) — cached while no write happened and no planned
        transition fell due since (so paging through 100,000 dossiers is not O(N) a page)."""
        key = (opco, siren, lo, fin)
        c = self._etats_cache.get(key)
        if c is not None and c[0] == self.version and now < c[1]:
            self._etats_cache.move_to_end(key)
            return c[2]
        hi = min(fin if fin is not None else INF, now + 1)
        rows = self.db.execute(
            "SELECT t, numero_interne, dossier_id, etat FROM transitions "
            "WHERE opco=? AND siren=? AND t>=? AND t<? AND t_next>=? "
            "ORDER BY t, numero_interne, dossier_id", (opco, siren, lo, hi, hi)).fetchall()
        if fin is not None and fin <= now:
            valid_until = INF
        else:
            nxt = self.db.execute("SELECT MIN(t) FROM transitions WHERE opco=? AND siren=? AND t>?",
                                  (opco, siren, now)).fetchone()[0]
            valid_until = nxt if nxt is not None else INF
        self._etats_cache[key] = (self.version, valid_until, rows)
        while len(self._etats_cache) > 8:
            self._etats_cache.popitem(last=False)
        return rows

    def etats(self, opco: str, siren: str, page: int, size: int,
              debut: int | None, fin: int | None) -> dict:
        total, items = self.etats_slice(opco, siren, (page - 1) * size, size, debut, fin)
        return {"total": total, "count": len(items), "page": page, "taillePage": size,
                "EtatDossierResult": items}

    def etats_slice(self, opco: str, siren: str, offset: int, limit: int,
                    debut: int | None, fin: int | None) -> tuple[int, list[dict]]:
        """(total, the state items [offset, offset + limit)) of the window, in list order."""
        now = self.now()
        lo = debut if debut is not None else -INF
        if lo >= min(fin if fin is not None else INF, now + 1):
            return 0, []
        keys = self._window(opco, siren, lo, fin, now)
        chunk = keys[offset: offset + limit]
        items = []
        if chunk:
            ids = [k[2] for k in chunk]
            by_id = {}
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                for r in self.db.execute(f"SELECT {self.D_COLS} FROM dossiers WHERE id IN "
                                         f"({','.join('?' * len(part))})", part):
                    by_id[r[0]] = r
            items = [self.status_item(by_id[did], etat, t) for t, _ni, did, etat in chunk]
        return len(keys), items

    # ---- completion: documents and conventions ----------------------------------
    def _complete(self, row, s: OpcoSettings, now: int) -> None:
        if row[15] is not None:
            return
        self.db.execute("UPDATE dossiers SET complete_t=? WHERE id=?", (now, row[0]))
        if not row[14] or row[13] is not None:
            return  # did not need it, or refused anyway
        tail = self._plan_tail(row[0])
        if tail and tail[-1][0] == "EN_COURS_INSTRUCTION":
            self._append(row, "ENGAGE", max(row[11], now) + s.d_decision_us)

    def add_document(self, opco: str, siren: str, type_fichier: str, objets: list[dict],
                     filename: str, content_type: str, data: bytes, s: OpcoSettings) -> dict:
        with self.lock:
            rows = []
            for i, o in enumerate(objets):
                row = self.find_dossier(opco, siren, o["idObjet"])
                if row is None:
                    raise NotFound(f"objets.{i}.idObjet", f"dossier {o['idObjet']} inconnu pour ce SIREN")
                rows.append(row)
            now = self.now()
            doc_id = f"DOC-{opco.upper()}-{hashlib.sha256(f'{now}{filename}{len(data)}'.encode()).hexdigest()[:16]}"
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO documents VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (doc_id, opco, siren, type_fichier, json.dumps(objets, ensure_ascii=False),
                             filename, content_type, len(data), hashlib.sha256(data).hexdigest(), now))
            if type_fichier == "CONVENTION_FORMATION":
                for row in rows:
                    self._complete(row, s, now)
            self.db.execute("COMMIT")
            return {"idDocument": doc_id, "typeFichier": type_fichier, "objets": objets}

    def add_convention(self, opco: str, siren: str, body: dict, facts: dict, s: OpcoSettings) -> dict:
        with self.lock:
            ni = facts["numeroInterneDossier"]
            row = self.find_dossier(opco, siren, ni)
            if row is None:
                raise NotFound("numeroInterneDossier", f"dossier {ni} inconnu pour ce SIREN")
            if row[18] and facts.get("siret") and row[18] != facts["siret"]:
                raise Rejected([{"code": "SIRET_DIFFERENT", "champ": "employeur.siret",
                                 "message": f"le SIRET {facts['siret']} n'est pas celui de l'employeur du "
                                            f"dossier ({row[18]})"}])
            now = self.now()
            cid = f"CONV-{opco.upper()}-{row[0]:09d}-{now % 1_000_000:06d}"
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO conventions VALUES (?,?,?,?,?,?)",
                            (cid, opco, siren, row[0], json.dumps(body, ensure_ascii=False), now))
            self._complete(row, s, now)
            self.db.execute("COMMIT")
            return {"idConvention": cid}

    def certificat_type(self, ech: list[dict], num: int) -> str:
        """The certificat an échéance needs: Final for the last one, Intermediaire before."""
        return "Final" if ech and num == ech[-1]["numero"] else "Intermediaire"

    def add_certificat(self, opco: str, siren: str, body: dict, facts: dict,
                       s: OpcoSettings | None = None) -> tuple[int, dict]:
        """One certificat de réalisation per (dossier, échéance): the same one again answers 200
        with the first one's id (a resend after a lost answer creates nothing)."""
        with self.lock:
            ni = facts["numeroInterneDossier"]
            row = self.find_dossier(opco, siren, ni)
            if row is None:
                raise NotFound("numeroInterneDossier", f"dossier {ni} inconnu pour ce SIREN")
            now = self.now()
            num = facts.get("echeance")
            if s is not None and s.certificat_requis:
                ech = self.echeances(row, now)
                if not ech:
                    raise Rejected([{"code": "DOSSIER_NON_ENGAGE", "champ": "numeroInterneDossier",
                                     "message": f"le dossier {ni} n'a pas d'échéancier : certificat prématuré"}])
                if num not in {e["numero"] for e in ech}:
                    raise Rejected([{"code": "ECHEANCE_INCONNUE", "champ": "echeance.numero",
                                     "message": f"échéance {num} absente de l'échéancier ({len(ech)} échéances)"}])
                want = self.certificat_type(ech, num)
                if facts.get("typeCertificat") != want:
                    raise Rejected([{"code": "TYPE_CERTIFICAT", "champ": "typeCertificat",
                                     "message": f"l'échéance {num} demande un certificat {want}"}])
            for cid, payload in self.db.execute("SELECT id, payload FROM certificats WHERE dossier_id=? "
                                                "ORDER BY created_t", (row[0],)):
                old = json.loads(payload)
                if (old.get("echeance") or {}).get("numero") == num and old.get("typeCertificat") == body.get(
                        "typeCertificat"):
                    return 200, {"idCertificat": cid, "numeroInterneDossier": ni,
                                 "typeCertificat": old.get("typeCertificat"), "dateReception": None}
            # one per (dossier, échéance, type): its id says so (never the clock: two certificats
            # of one dossier in the same instant must not share an id and replace each other)
            cid = f"CERT-{opco.upper()}-{row[0]:09d}-E{num if isinstance(num, int) else 0:02d}-" \
                  f"{str(body.get('typeCertificat') or '?')[:1]}"
            self.db.execute("INSERT OR REPLACE INTO certificats VALUES (?,?,?,?,?,?)",
                            (cid, opco, siren, row[0], json.dumps(body, ensure_ascii=False), now))
            return 201, {"idCertificat": cid, "numeroInterneDossier": ni,
                         "typeCertificat": body.get("typeCertificat"), "dateReception": iso(now)}

    def certificats_of(self, dossier_id: int) -> set[int]:
        return {(json.loads(p).get("echeance") or {}).get("numero")
                for (p,) in self.db.execute("SELECT payload FROM certificats WHERE dossier_id=?", (dossier_id,))}

    # ---- rupture -----------------------------------------------------------------
    def rupture(self, opco: str, siren: str, body: dict, facts: dict) -> dict:
        with self.lock:
            ni = facts["numeroInterne"]
            row = self.find_dossier(opco, siren, ni)
            if row is None:
                raise NotFound("numeroInterne", f"dossier {ni} inconnu pour ce SIREN")
            now = self.now()
            etat, _, _ = self.state_of(row, now)
            if etat != "ENGAGE":
                raise Rejected([{"code": "ETAT_INCOMPATIBLE", "champ": "numeroInterne",
                                 "message": f"rupture impossible : le dossier est {etat} (ENGAGE attendu)"}])
            p = self.payload_of(row)
            dr = facts["dateRupture"]
            deb = dt.date.fromisoformat(p["contrat"]["dateDebutContrat"])
            fin = dt.date.fromisoformat(p["contrat"]["dateFinContrat"])
            if not (deb <= dr <= fin):
                raise Rejected([{"code": "DATES", "champ": "dateRupture",
                                 "message": f"dateRupture doit être comprise entre {deb} et {fin}"}])
            info = {"dateRupture": dr.isoformat(), "motif": body.get("motif"), "dateReception": iso(now)}
            self.db.execute("BEGIN")
            self.db.execute("UPDATE dossiers SET rupture=? WHERE id=?", (json.dumps(info, ensure_ascii=False), row[0]))
            self._append(row, "RUPTU", now, drop_after=now)
            self.db.execute("COMMIT")
            return {"numeroInterne": ni, "numeroExterne": row[4], "numeroDeca": row[5],
                    "etat": "RUPTU", "dateEtat": iso(now), "dateRupture": dr.isoformat()}

    # ---- factures ----------------------------------------------------------------
    def facture(self, opco: str, siren: str, body: dict, facts: dict, s: OpcoSettings) -> tuple[int, dict]:
        with self.lock:
            nif = facts["numeroInterneFacture"]
            canon = facts.get("_canon")
            h = hashlib.sha256(canon).hexdigest() if canon is not None else canonical_hash(body)
            ex = self.db.execute("SELECT id, content_hash, regle_t, montant, issue FROM factures WHERE opco=? "
                                 "AND siren=? AND numero_interne_facture=?", (opco, siren, nif)).fetchone()
            now = self.now()
            if ex is not None:
                if ex[1] == h:
                    self.bump(opco, "dup", "facture_same_content")
                    return 200, {"numeroInterneFacture": nif,
                                 "etatFacture": invoicing.etat(invoicing.decode(ex[4], ex[3]), ex[2], now)}
                raise Rejected([{"code": "NUMERO_INTERNE_EXISTANT", "champ": "numeroInterneFacture",
                                 "message": f"la facture {nif} existe déjà avec un contenu différent"}], 409)
            ni = facts["numeroInterneDossier"]
            row = self.find_dossier(opco, siren, ni)
            if row is None:
                raise NotFound("numeroInterneDossier", f"dossier {ni} inconnu pour ce SIREN")
            etat, _, hist = self.state_of(row, now)
            if etat not in ("ENGAGE", "RUPTU", "SOLDE") or not any(e == "ENGAGE" for e, _ in hist):
                raise Rejected([{"code": "DOSSIER_NON_ENGAGE", "champ": "numeroInterneDossier",
                                 "message": f"le dossier {ni} est {etat} : facturation possible une fois ENGAGE"}])
            ech = {e["numero"]: e for e in self.echeances(row, now)}
            num = facts["echeance"]
            e = ech.get(num)
            if e is None:
                raise Rejected([{"code": "ECHEANCE_INCONNUE", "champ": "echeance.numero",
                                 "message": f"échéance {num} absente de l'échéancier ({len(ech)} échéances)"}])
            if e["etat"] == "ANNULEE":
                raise Rejected([{"code": "ECHEANCE_ANNULEE", "champ": "echeance.numero",
                                 "message": f"échéance {num} postérieure à la rupture du contrat"}])
            if e["etat"] != "A_FACTURER":
                raise Rejected([{"code": "ECHEANCE_DEJA_FACTUREE", "champ": "echeance.numero",
                                 "message": f"échéance {num} déjà facturée"}])
            if s.certificat_requis and num not in self.certificats_of(row[0]):
                want = self.certificat_type(list(ech.values()), num)
                raise Rejected([{"code": "CERTIFICAT_MANQUANT", "champ": "echeance.numero",
                                 "message": f"certificat de réalisation {want} de l'échéance {num} non reçu : "
                                            "l'envoyer (POST /v2/certificats) avant la facture"}])
            if facts["montant"] > e["montant"] + 1e-9:
                raise Rejected([{"code": "MONTANT_SUPERIEUR", "champ": "montant",
                                 "message": f"montant {facts['montant']:.2f} supérieur à celui de l'échéance "
                                            f"{num} ({e['montant']:.2f})"}])
            regle_t = now + s.d_reglement_us
            issue = invoicing.issue_for(s, opco, nif, facts["montant"])
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO factures (opco, siren, numero_interne_facture, reference_cfa, dossier_id, "
                            "echeance, montant, content_hash, payload, created_t, regle_t, issue) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (opco, siren, nif, body.get("referenceFactureCFA"), row[0], num, facts["montant"], h,
                             json.dumps(body, ensure_ascii=False), now, regle_t, issue.encode()))
            # every échéance invoiced (and not to be rejected) on an engaged contract: SOLDE once the
            # last one is paid
            if issue.kind != "REJET" and etat == "ENGAGE" and not self._echeances_left(row, ech, num):
                last = self.db.execute("SELECT MAX(regle_t) FROM factures WHERE dossier_id=?", (row[0],)).fetchone()[0]
                self._append(row, "SOLDE", max(last, now))
            self.db.execute("COMMIT")
            self.bump(opco, "created", "factures")
            return 201, {"numeroInterneFacture": nif, "etatFacture": "EN_COURS"}

    def _echeances_left(self, row, ech: dict[int, dict], num: int) -> bool:
        """An échéance other than ``num`` still to invoice, or whose invoice will be rejected."""
        fates: dict[int, bool] = {}   # échéance -> has an invoice that will not be rejected
        for e, montant, issue in self.db.execute(
                "SELECT echeance, montant, issue FROM factures WHERE dossier_id=?", (row[0],)):
            fates[e] = fates.get(e, False) or invoicing.decode(issue, montant).kind != "REJET"
        return any(x["numero"] != num and x["etat"] != "ANNULEE" and not fates.get(x["numero"])
                   for x in ech.values())

    def factures_etats(self, opco: str, siren: str, nif: str | None, debut: int | None,
                       fin: int | None) -> list[dict]:
        now = self.now()
        sql = ("SELECT f.id, f.numero_interne_facture, f.reference_cfa, f.montant, f.created_t, f.regle_t, "
               "d.numero_interne, d.numero_externe, f.issue FROM factures f JOIN dossiers d ON d.id=f.dossier_id "
               "WHERE f.opco=? AND f.siren=? AND f.created_t<=?")
        args: list = [opco, siren, now]
        if nif is not None:
            sql += " AND f.numero_interne_facture=?"
            args.append(nif)
        out = []
        lo = debut if debut is not None else -INF
        hi = fin if fin is not None else INF
        for fid, n, ref, m, ct, rt, dni, dext, raw_issue in self.db.execute(sql + " ORDER BY f.id", args):
            issue = invoicing.decode(raw_issue, m)
            state = invoicing.etat(issue, rt, now)
            paid = state == invoicing.REGLE
            changed = ct if state == invoicing.EN_COURS else rt
            if not (lo <= changed < hi):
                continue
            item = {"numeroInterneFacture": n, "referenceFactureCFA": ref,
                    "etatFacture": state, "montantFacture": round(m, 2),
                    "montantRegle": issue.montant_regle if paid else None,
                    "referenceVirement": f"VIR-{opco.upper()}-{fid:08d}" if paid else None,
                    "dateReglement": iso_date(rt) if paid else None,
                    "dateEtat": iso(changed),
                    "commentaire": invoicing.commentaire(issue, state, m),
                    "dossiers": [{"numeroInterneDossier": dni, "numeroExterneDossier": dext,
                                  "montant": issue.montant_regle if paid else round(m, 2)}]}
            if state == invoicing.REJETE:
                item["motifsRejet"] = [issue.motif]
            out.append(item)
        return out

    # ---- oauth2 tokens -------------------------------------------------------------
    def add_token(self, token: str, opco: str, client_id: str, expires_t: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO tokens VALUES (?,?,?,?)", (token, opco, client_id, expires_t))

    def token_expiry(self, token: str, opco: str) -> int | None:
        r = self.db.execute("SELECT expires_t FROM tokens WHERE token=? AND opco=?", (token, opco)).fetchone()
        return r[0] if r else None

    # ---- introspection -------------------------------------------------------------
    def creations(self, opco: str, siren: str | None = None) -> dict:
        sql = "SELECT siren, numero_interne, COUNT(*) FROM dossiers WHERE opco=?"
        args: list = [opco]
        if siren:
            sql += " AND siren=?"
            args.append(siren)
        counts: dict[str, int] = {}
        dups = []
        for sr, ni, n in self.db.execute(sql + " GROUP BY siren, numero_interne", args):
            counts[ni] = counts.get(ni, 0) + n
            if n > 1:
                dups.append(ni)
        return {"opco": opco, "total": sum(counts.values()), "distinct": len(counts),
                "creations": counts, "duplicates": sorted(dups)}

    def count_dossiers(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM dossiers").fetchone()[0]

    # ---- bulk seeding --------------------------------------------------------------
    def seed(self, opco: str, siren: str, count: int, template: dict, s: OpcoSettings, *,
             prefix: str = "SEED", start_us: int | None = None, spread_seconds: float = 86400.0,
             outcomes: Iterable[str] = ("ENGAGE",) * 7 + ("REFUSE",) + ("INCOMPLET",) * 2,
             version: str = "v2") -> dict:
        """Writes ``count`` dossiers straight into the database (no HTTP, no rate limit).
        Creation times are spread evenly over ``spread_seconds`` from ``start_us`` (default:
        now − spread); each then follows the OPCO's delays, the outcome cycling through
        ``outcomes`` (ENGAGE, REFUSE, INCOMPLET = waiting for its training agreement)."""
        outcomes = list(outcomes) or ["ENGAGE"]
        spread_us = int(spread_seconds * US)
        with self.lock:
            now = self.now()
            start = start_us if start_us is not None else now - spread_us
            tpl = dict(template)
            tpl.pop("numeroInterne", None)
            tpl_text = json.dumps(tpl, ensure_ascii=False, separators=(",", ":"))
            self.db.execute("BEGIN")
            cur = self.db.execute("INSERT INTO templates (payload) VALUES (?)", (tpl_text,))
            tid = cur.lastrowid
            first = self.next_id
            d_rows, t_rows = [], []
            motif_refus = json.dumps([{"code": "IDCC_AUTRE_OPCO", "message": "IDCC d'un autre OPCO (seed)"}])
            emp_siret = (template.get("employeur") or {}).get("siret")
            for i in range(count):
                did = first + i
                ni = f"{prefix}-{did:09d}"
                t0 = start + (spread_us * i // max(1, count))
                t1 = t0 + s.d_instruction_us
                out = outcomes[i % len(outcomes)]
                plan = [("TRANSMIS", t0), ("EN_COURS_INSTRUCTION", t1)]
                motifs = None
                complete = None
                if out == "REFUSE":
                    plan.append(("REFUSE", t1 + s.d_decision_us))
                    motifs = motif_refus
                elif out == "ENGAGE":
                    plan.append(("ENGAGE", t1 + s.d_decision_us))
                    complete = t0
                payload = dict(tpl, numeroInterne=ni)
                d_rows.append((did, opco, siren, ni, f"{opco.upper()}-{did:09d}", make_deca(payload, did),
                               canonical_hash(payload) if count <= 10000 else f"seed-{did}", None, tid, version,
                               t0, t1, 11, motifs, 1, complete, npec_for(s, (tpl.get("formation") or {}).get("rncp", "")),
                               None, emp_siret))
                for j, (etat, t) in enumerate(plan):
                    t_rows.append((did, opco, siren, ni, etat, t, plan[j + 1][1] if j + 1 < len(plan) else INF))
            self.db.executemany(f"INSERT INTO dossiers ({self.D_COLS}) VALUES "
                                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", d_rows)
            self.db.executemany("INSERT INTO transitions (dossier_id, opco, siren, numero_interne, etat, t, t_next) "
                                "VALUES (?,?,?,?,?,?,?)", t_rows)
            self.db.execute("COMMIT")
            self.version += 1
            self.next_id = first + count
            self.bump(opco, "created", "dossiers", count)
            self.bump(opco, "created", "seeded", count)
            return {"opco": opco, "siren": siren, "count": count, "first": f"{prefix}-{first:09d}",
                    "last": f"{prefix}-{first + count - 1:09d}", "from": iso(start),
                    "to": iso(start + spread_us)}
