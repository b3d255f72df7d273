"""The leak scanner of the security tests: what a run leaves, read as text (files, Excel
sheets and zip members, database rows, mails, webhook bodies, captured logs), searched for
secrets and personal data that must never be there.

- secrets (OPCO API keys, OAuth client secrets, webhook tokens...): searched as given, and
  URL-encoded;
- NIRs: the 13 characters before the key, found with or without separators (spaces,
  non-breaking spaces, dots, dashes), so "1 07 03 75 123 456 78" counts as a full NIR while
  the masked "1 07 03 ** *** *** 78" does not;
- IBANs: the given ones, and any valid French IBAN (mod-97 key), with or without spaces.

A leak is reported by where it was found and what it is (``"clé API opco_atlas_775672272"``),
never by the value itself: the test's own output must not leak."""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# separators an ERP or a report puts inside a number, removed between two letters/digits
_SEP = re.compile(r"(?<=[0-9A-Za-z])(?:[ \t.\-_/\u00a0\u202f]|\\u00a0|\\u202f|&nbsp;|&#160;)+(?=[0-9A-Za-z])")
# the 13 characters of a NIR before its key (Corsica: 2A/2B), at every position (overlapping)
_NIR13 = re.compile(r"(?=([12]\d{4}[0-9AB][0-9AB]\d{6}))")
# a French IBAN as typed (groups of 4 or not), then checked by its mod-97 key
_IBAN_FR = re.compile(r"(?<![0-9A-Za-z])FR\d{2}(?:[ \u00a0]?[0-9A-Z]){23}(?![0-9A-Za-z])")
_TEXT_SUFFIXES = {".html", ".htm", ".md", ".json", ".csv", ".txt", ".log", ".xml", ".yaml", ".yml", ".js", ".css",
                  ".rels", ".svg", ""}
_ZIP_SUFFIXES = {".zip", ".xlsx", ".docx", ".ods"}


def normalised(text: str) -> str:
    """``text`` with the separators inside numbers removed, upper case."""
    return _SEP.sub("", text).upper()


def nir_body(raw: str) -> str | None:
    """The 13 characters of a NIR as an ERP typed it (spaces, dots...), or None if not one."""
    n = re.sub(r"[^0-9A-Za-z]", "", raw or "").upper()
    return n[:13] if len(n) in (13, 15) and re.fullmatch(r"[12]\d{4}[0-9AB]{2}\d{6}(\d{2})?", n) else None


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: the country and check digits moved to the end, letters as numbers, mod 97 = 1."""
    if len(candidate) < 15 or len(candidate) > 34 or not candidate.isalnum():
        return False
    moved = candidate[4:] + candidate[:4]
    digits = "".join(str(int(c, 36)) for c in moved)
    return int(digits) % 97 == 1


@dataclass(frozen=True)
class Leak:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Watchlist:
    """What must never appear: secrets by label, NIRs (13-character bodies), IBANs."""
    secrets: dict[str, str] = field(default_factory=dict)    # value -> label
    nirs: set[str] = field(default_factory=set)
    ibans: set[str] = field(default_factory=set)

    def add_secret(self, value: str | None, label: str) -> None:
        if value and len(value) >= 6:     # a too short value would match by chance
            self.secrets[value] = label

    def add_nir(self, raw: str | None) -> None:
        body = nir_body(raw or "")
        if body:
            self.nirs.add(body)

    def add_iban(self, raw: str) -> None:
        self.ibans.add(re.sub(r"\s", "", raw).upper())

    # ---- scanning -----------------------------------------------------------------------
    def scan_text(self, where: str, text: str, personal: bool = True) -> list[Leak]:
        """Secrets, and unless ``personal`` is False, full NIRs and IBANs."""
        found: list[Leak] = []
        for value, label in self.secrets.items():
            if value in text or quote(value, safe="") in text:
                found.append(Leak(where, label))
        if not personal:
            return found
        norm = normalised(text)
        nirs = {m for m in _NIR13.findall(norm) if m in self.nirs}
        if nirs:
            found.append(Leak(where, f"{len(nirs)} NIR complet(s)"))
        ibans = {m for m in self.ibans if m in norm}
        for m in _IBAN_FR.findall(text.upper()):
            compact = re.sub(r"\s", "", m)
            if iban_valid(compact):
                ibans.add(compact)
        if ibans:
            found.append(Leak(where, f"{len(ibans)} IBAN complet(s)"))
        return found

    def scan_bytes(self, where: str, data: bytes, name: str = "") -> list[Leak]:
        """A file's content: zip containers (xlsx, proof bundles) member by member, text as UTF-8."""
        suffix = Path(name or where).suffix.lower()
        if suffix in _ZIP_SUFFIXES or data[:4] == b"PK\x03\x04":
            found: list[Leak] = []
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for member in zf.namelist():
                    found += self.scan_bytes(f"{where}!{member}", zf.read(member), member)
            return found
        return self.scan_text(where, data.decode("utf-8", errors="replace"))

    def scan_tree(self, root: Path, label: str | None = None) -> tuple[list[Leak], int]:
        """Every file under ``root``; returns (leaks, files read)."""
        found: list[Leak] = []
        n = 0
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            n += 1
            found += self.scan_bytes(f"{label or root}/{path.relative_to(root)}", path.read_bytes(), path.name)
        return found, n

    def scan_database(self, dsn: str, label: str,
                      opco_bound: dict[str, set[str] | str] | None = None) -> tuple[list[Leak], int]:
        """Every row of every table of ``dsn`` (public schema) as text; the ``opco_bound``
        columns ({table: {column} or "*"}: what the connector keeps to send, which the norm
        requires to carry the NIR) are searched for secrets only. Returns (leaks, rows read)."""
        from cfa_opco.db.connect import connection   # lazy: the scanner's text part needs no database

        opco_bound = opco_bound or {}
        found: list[Leak] = []
        total = 0
        with connection(dsn) as conn, conn.cursor() as cur:
            cur.execute("""SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position)
                           FROM information_schema.columns c
                           WHERE table_schema = 'public' AND EXISTS (
                               SELECT 1 FROM information_schema.tables t WHERE t.table_schema = 'public'
                                 AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE')
                           GROUP BY 1 ORDER BY 1""")
            for table, columns in cur.fetchall():
                bound = opco_bound.get(table, set())
                bound = set(columns) if bound == "*" else bound
                for personal, cols in ((True, [c for c in columns if c not in bound]),
                                       (False, [c for c in columns if c in bound])):
                    if not cols:
                        continue
                    buf = io.StringIO()
                    select = ", ".join(f'"{c}"' for c in cols)
                    cur.copy_expert(f'COPY (SELECT {select} FROM "{table}") TO STDOUT', buf)
                    text = buf.getvalue()
                    if personal:
                        total += text.count("\n")
                    # COPY's text format doubles backslashes: read it as the rows hold it
                    found += self.scan_text(f"{label}.{table}", text.replace("\\\\", "\\"), personal)
        return found, total
