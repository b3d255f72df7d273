"""Test-only routes under /_sandbox (excluded from the OpenAPI schema)."""
from __future__ import annotations

import copy
import json
import os

from fastapi import APIRouter, Request

from .config import DEFAULTS
from .errors import ApiError, parse_time
from .faults import FAULT_KINDS, with_preset
from .profiles import PROFILES, J, parse_profile, profile_name
from .seed import default_template
from .store import US, iso


def add_introspection(app, sb) -> None:
    r = APIRouter(prefix="/_sandbox", include_in_schema=False)

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, "JSON_INVALIDE", None, "corps JSON illisible")
        if not isinstance(data, dict):
            raise ApiError(400, "TYPE", None, "objet JSON attendu")
        return data

    def opco_arg(o: str | None) -> str:
        if o not in sb.caps:
            raise ApiError(404, "OPCO_INCONNU", "opco", f"OPCO inconnu : {o}")
        return o

    @r.get("/health")
    async def health():
        return J({"status": "ok", "pid": os.getpid(), "db": sb.store.path, "now": iso(sb.store.now()),
                  "opcos": sorted(sb.caps), "dossiers": sb.store.count_dossiers()})

    def stats_for(o: str) -> dict:
        st = sb.store.stats
        g = lambda kind, k: st.get((o, kind, k), 0)  # noqa: E731
        return {"dossiers_created": g("created", "dossiers"), "dossiers_seeded": g("created", "seeded"),
                "duplicates_prevented": g("dup", "same_content") + g("dup", "conflict"),
                "duplicates_same_content": g("dup", "same_content"), "conflicts_409": g("dup", "conflict"),
                "duplicates_created": g("dup", "created"),
                "profile": profile_name(sb.profile(o)),
                "requests_by_status": {k: v for (oo, kind, k), v in st.items() if oo == o and kind == "status"},
                "faults_injected": {k: v for (oo, kind, k), v in st.items() if oo == o and kind == "fault"},
                "lost_responses_by_real_status": {k: v for (oo, kind, k), v in st.items()
                                                  if oo == o and kind == "lost"},
                "held_responses_by_real_status": {k: v for (oo, kind, k), v in st.items()
                                                  if oo == o and kind == "held"},
                "html_200_pages": g("profile", "html_200")}

    @r.get("/stats")
    async def stats(opco: str | None = None):
        if opco:
            return J(dict(stats_for(opco_arg(opco)), opco=opco))
        return J({o: stats_for(o) for o in sorted(sb.caps)})

    @r.get("/creations")
    async def creations(opco: str | None = None, siren: str | None = None):
        return J(sb.store.creations(opco_arg(opco), siren))

    @r.post("/reset")
    async def reset(request: Request):
        data = await body_of(request)
        sb.store.reset()
        if not data.get("keep_settings"):
            sb.apply(sb.file_cfg)
        else:
            sb.buckets.clear()
        return J({"status": "reset"})

    @r.get("/faults")
    async def faults_get():
        return J(sb.cfg["faults"])

    @r.put("/faults")
    @r.patch("/faults")
    async def faults_set(request: Request):
        data = await body_of(request)
        base = sb.cfg["faults"]
        if request.method == "PUT":
            base = dict(DEFAULTS["faults"], seed=sb.cfg["faults"].get("seed", 1234))
        if data.get("preset"):
            try:
                new = with_preset(base, data["preset"], {k: v for k, v in data.items() if k != "preset"})
            except ValueError as exc:
                raise ApiError(400, "PRESET_INCONNU", "preset", str(exc))
        else:
            new = dict(base, **data)
            if request.method == "PATCH" and any(k in FAULT_KINDS for k in data):
                new["preset"] = None   # the mix is no longer the named preset
        sb.cfg = dict(sb.cfg, faults=new)
        sb.faults.configure(new)
        return J(sb.cfg["faults"])

    @r.delete("/faults")
    async def faults_off():
        sb.cfg = dict(sb.cfg, faults=dict(DEFAULTS["faults"], seed=sb.cfg["faults"].get("seed", 1234)))
        sb.faults.configure(sb.cfg["faults"])
        return J(sb.cfg["faults"])

    # ---- response-shape profiles --------------------------------------------------
    def profiles_view() -> dict:
        return {"profile": profile_name(parse_profile(sb.cfg.get("profile"))),
                "opcos": {o: profile_name(sb.profile(o)) for o in sorted(sb.caps)},
                "profiles": list(PROFILES)}

    def checked(data: dict) -> str:
        if "profile" not in data:
            raise ApiError(400, "OBLIGATOIRE", "profile", 'corps {"profile": "<nom>[+<nom>...]"} attendu')
        try:
            return profile_name(parse_profile(data["profile"]))
        except ValueError as exc:
            raise ApiError(400, "PROFIL_INVALIDE", "profile", str(exc))

    @r.get("/profiles")
    async def profiles_get():
        return J(profiles_view())

    @r.put("/profiles")
    async def profiles_set(request: Request):
        """The global profile; per-OPCO profiles are cleared unless given in "opcos"."""
        data = await body_of(request)
        name = checked(data)
        per = data.get("opcos") or {}
        if not isinstance(per, dict):
            raise ApiError(400, "TYPE", "opcos", "objet {opco: profil} attendu")
        per = {opco_arg(o): checked({"profile": v}) for o, v in per.items()}
        cfg = copy.deepcopy(sb.cfg)
        cfg["profile"] = name
        for o, oc in (cfg.get("opcos") or {}).items():
            if isinstance(oc, dict):
                oc.pop("profile", None)
        for o, v in per.items():
            cfg.setdefault("opcos", {}).setdefault(o, {})["profile"] = v
        sb.apply(cfg, faults_changed=False)
        return J(profiles_view())

    @r.put("/profiles/{opco}")
    async def profile_set(opco: str, request: Request):
        """One OPCO's profile; {"profile": null} falls back to the global one."""
        o = opco_arg(opco)
        data = await body_of(request)
        cfg = copy.deepcopy(sb.cfg)
        oc = cfg.setdefault("opcos", {}).setdefault(o, {})
        if data.get("profile", "") is None:
            oc.pop("profile", None)
        else:
            oc["profile"] = checked(data)
        sb.apply(cfg, faults_changed=False)
        return J(profiles_view())

    @r.get("/settings")
    async def settings_get():
        return J({k: v for k, v in sb.cfg.items()}, 200)

    @r.patch("/settings")
    async def settings_set(request: Request):
        data = await body_of(request)
        try:
            sb.patch(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "REGLAGE_INVALIDE", None, str(exc)[:300])
        return J({k: sb.cfg[k] for k in data if k in sb.cfg})

    @r.get("/clock")
    async def clock_get():
        return J({"now": iso(sb.store.now()), "offset_seconds": sb.store.clock_offset_us / US})

    @r.post("/clock")
    async def clock_set(request: Request):
        data = await body_of(request)
        if "advance_seconds" in data:
            sb.store.set_clock_offset(sb.store.clock_offset_us + int(float(data["advance_seconds"]) * US))
        elif "offset_seconds" in data:
            sb.store.set_clock_offset(int(float(data["offset_seconds"]) * US))
        return J({"now": iso(sb.store.now()), "offset_seconds": sb.store.clock_offset_us / US})

    @r.post("/seed")
    async def seed(request: Request):
        data = await body_of(request)
        o = opco_arg(data.get("opco"))
        siren = str(data.get("siren", "775672272"))
        tpl = data.get("template") or default_template(o, siren)
        kw = {}
        if "start" in data:
            kw["start_us"] = parse_time(data["start"], "start")
        if "spread_seconds" in data:
            kw["spread_seconds"] = float(data["spread_seconds"])
        if "outcomes" in data:
            kw["outcomes"] = list(data["outcomes"])
        out = sb.store.seed(o, siren, int(data.get("count", 1000)), tpl, sb.settings[o],
                            prefix=str(data.get("prefix", "SEED")), **kw)
        return J(out, 201)

    @r.get("/dossier")
    async def dossier_dump(opco: str, numeroInterne: str, siren: str | None = None):
        o = opco_arg(opco)
        q = "SELECT siren FROM dossiers WHERE opco=? AND numero_interne=? ORDER BY id DESC LIMIT 1"
        row = sb.store.db.execute(q, (o, numeroInterne)).fetchone()
        if row is None:
            raise ApiError(404, "DOSSIER_INCONNU", "numeroInterne", "inconnu")
        d = sb.store.find_dossier(o, siren or row[0], numeroInterne)
        return J(sb.store.full_dossier(d, sb.store.now(), sb.settings[o].certificat_requis))

    @r.get("/conventions")
    async def conventions_dump(opco: str):
        """The conventions de formation received, per dossier: how many, and the last one."""
        o = opco_arg(opco)
        out: dict[str, dict] = {}
        for ni, payload in sb.store.db.execute(
                "SELECT d.numero_interne, c.payload FROM conventions c JOIN dossiers d ON d.id = c.dossier_id "
                "WHERE c.opco=? ORDER BY c.created_t, c.id", (o,)):
            item = out.setdefault(ni, {"count": 0})
            item["count"] += 1
            item["last"] = json.loads(payload)
        return J({"conventions": out})

    @r.get("/certificats")
    async def certificats_dump(opco: str):
        """The certificats de réalisation received: one row each (the store keeps one per
        échéance and type; the same one again is answered 200 without a new row)."""
        o = opco_arg(opco)
        rows = []
        for cid, ni, payload in sb.store.db.execute(
                "SELECT c.id, d.numero_interne, c.payload FROM certificats c JOIN dossiers d ON d.id = c.dossier_id "
                "WHERE c.opco=? ORDER BY c.created_t, c.id", (o,)):
            body = json.loads(payload)
            rows.append({"idCertificat": cid, "numeroInterneDossier": ni, "typeCertificat": body.get("typeCertificat"),
                         "echeance": (body.get("echeance") or {}).get("numero")})
        return J({"certificats": rows})

    @r.get("/factures")
    async def factures_dump(opco: str):
        """The invoices this OPCO holds (one row each: the store keeps one per invoice number),
        with how many identical re-sends it answered 200 without creating anything."""
        o = opco_arg(opco)
        rows = [{"numeroInterneFacture": n, "numeroInterneDossier": ni, "echeance": e, "montant": m}
                for n, ni, e, m in sb.store.db.execute(
                    "SELECT f.numero_interne_facture, d.numero_interne, f.echeance, f.montant FROM factures f "
                    "JOIN dossiers d ON d.id = f.dossier_id WHERE f.opco=? ORDER BY f.id", (o,))]
        st = sb.store.stats
        return J({"factures": rows, "created": st.get((o, "created", "factures"), 0),
                  "same_content": st.get((o, "dup", "facture_same_content"), 0)})

    @r.post("/flush")
    async def flush():
        sb.store.flush_stats()
        sb.store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return J({"status": "flushed"})

    app.include_router(r)
