"""The OPCO sandbox: eleven OPCOs of the API CFA-OPCO norm served from one process.

    http://127.0.0.1:PORT/<opco_code>/ApiEchangeCFA/v1|v2/...
    http://127.0.0.1:PORT/<opco_code>/oauth/token          (OPCOs with oauth2_v2: AKTO)
    http://127.0.0.1:PORT/_sandbox/...                      (test-only introspection)
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import enum
import json
import secrets
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cfa_opco.providers.opco.norm import ROUTES

from . import profiles, schemas
from .config import (OPCO_CODES, OpcoSettings, build_keys, deep_merge, load_capabilities, load_config,
                     load_idcc, opco_settings)
from .errors import ApiError, parse_time
from .faults import FaultLayer, Faults, TokenBucket, route_of
from .introspection import add_introspection
from .profiles import J, Profile
from .store import US, NotFound, Rejected, Store, iso
from .validation import (RE_NI, validate_certificat, validate_convention, validate_dossier,
                         validate_facture, validate_rupture)

SOFTWARE_HEADERS = ("EDITEUR", "LOGICIEL", "VERSION")
DOC_TYPES = ("CONVENTION_FORMATION", "CERFA_SIGNE", "AUTRE")

OpcoCode = enum.Enum("OpcoCode", {c: c for c in OPCO_CODES}, type=str)


class Sandbox:
    def __init__(self, cfg: dict, db_path: str | None = None):
        self.file_cfg = cfg
        self.cfg = cfg
        self.caps = load_capabilities(cfg.get("capabilities_file"))
        self.opco_names = {c: v["name"] for c, v in self.caps.items()}
        self.idcc = load_idcc(cfg.get("idcc_file"))
        self.store = Store(db_path or cfg["db"])
        self.buckets = TokenBucket()
        self.faults = Faults(cfg["faults"])
        self.html200 = profiles.Html200()
        self.apply(cfg)

    def apply(self, cfg: dict, faults_changed: bool = True) -> None:
        settings = {o: opco_settings(cfg, o) for o in self.caps}   # ValueError before any change
        self.cfg = cfg
        self.settings: dict[str, OpcoSettings] = settings
        self.keys = build_keys(cfg.get("keys") or [], dt.date.today())
        clients = (cfg.get("oauth2") or {}).get("clients") or {}
        self.oauth_clients = {o: {str(c["client_id"]): str(c["client_secret"]) for c in (lst or [])}
                              for o, lst in clients.items()}
        self.token_lifetime_us = int(float((cfg.get("oauth2") or {}).get("token_lifetime_seconds", 3600)) * US)
        if faults_changed:
            self.faults.configure(cfg["faults"])
        po = cfg.get("profile_options") or {}
        self.html200.configure(float(po.get("html_200_share", 0.02)), int(po.get("seed", 4321)))
        self.buckets.clear()

    # ---- response-shape profiles ---------------------------------------------------
    def profile(self, opco: str | None) -> Profile:
        s = self.settings.get(opco) if opco else None
        return s.profile if s is not None else Profile()

    def error_response(self, path: str, status: int, errors: list, headers: dict | None = None) -> Response:
        """Every error answer: in the profile of the OPCO named by the path (strict elsewhere)."""
        opco, route = route_of("GET", path)
        prof = self.profile(opco) if route != "oauth_token" else Profile()
        return profiles.render_error(prof, status, errors, headers)

    def ok(self, opco: str, route: str, obj: Any, status: int = 200) -> Response:
        return profiles.render_ok(self.profile(opco), route, obj, status)

    def patch(self, changes: dict) -> None:
        self.apply(deep_merge(self.cfg, changes), faults_changed="faults" in changes)

    # ---- the common gate of every API call ---------------------------------------
    def gate(self, request: Request, opco: str, route: str):
        caps = self.caps.get(opco)
        if caps is None:
            raise ApiError(404, "OPCO_INCONNU", None, f"OPCO inconnu : {opco}")
        if route not in caps["routes"]:
            raise ApiError(404, "ROUTE_NON_SERVIE", None,
                           f"{caps['name']} ne sert pas cette route ({route}) par API")
        h = request.headers
        missing = [n for n in SOFTWARE_HEADERS if not h.get(n)]
        if missing:
            raise ApiError(400, "", None, "", errors=[
                {"code": "ENTETE_MANQUANTE", "champ": n,
                 "message": f"en-tête {n} obligatoire (identification du logiciel)"} for n in missing])
        key = h.get("x-api-key")
        if not key:
            raise ApiError(401, "CLE_ABSENTE", "X-API-KEY", "en-tête X-API-KEY manquant")
        ki = self.keys.get(key)
        if ki is None or ki.opco != opco:
            raise ApiError(401, "CLE_INCONNUE", "X-API-KEY", f"clé API inconnue de {caps['name']}")
        s = self.settings[opco]
        wait = self.buckets.take(key, s.rate, s.burst)
        if wait:
            ra = f"{max(wait, 0.001):.3f}" if s.retry_after_decimal else str(max(1, int(wait + 0.999)))
            raise ApiError(429, "TROP_DE_REQUETES", None,
                           f"limite de {s.rate:g} requêtes/s par clé dépassée ; réessayer dans {ra} s",
                           headers={"Retry-After": ra})
        if caps["oauth2_v2"] and "_v2" in route or (caps["oauth2_v2"] and route == "cfakeyinfo"):
            self.check_token(h.get("authorization"), opco)
        if route != "cfakeyinfo" and ki.expires < self.store.today():
            raise ApiError(403, "CLE_EXPIREE", "X-API-KEY",
                           f"clé API expirée le {ki.expires.isoformat()} (SIREN {ki.siren})")
        return ki, s

    def check_token(self, auth: str | None, opco: str) -> None:
        hdr = {"WWW-Authenticate": 'Bearer realm="ApiEchangeCFA"'}
        if not auth or not auth.lower().startswith("bearer "):
            raise ApiError(401, "JETON_ABSENT", "Authorization",
                           "jeton OAuth2 (client_credentials) obligatoire sur les routes v2 ; "
                           f"l'obtenir par POST /{opco}/oauth/token", headers=hdr)
        exp = self.store.token_expiry(auth[7:].strip(), opco)
        if exp is None:
            raise ApiError(401, "JETON_INVALIDE", "Authorization", "jeton OAuth2 inconnu", headers=hdr)
        if exp <= self.store.now():
            raise ApiError(401, "JETON_EXPIRE", "Authorization", f"jeton OAuth2 expiré le {iso(exp)}",
                           headers=hdr)

    def check_siren(self, ki, siret: str | None, champ: str) -> None:
        """The dossier's establishment must be the key's: its company for a SIREN key, the
        establishment itself for a SIRET key."""
        if siret and siret[:9] != ki.siren:
            raise ApiError(403, "SIREN_DIFFERENT", champ,
                           f"la clé API est celle du SIREN {ki.siren} ; le dossier relève du SIREN "
                           f"{siret[:9]} ({champ})")
        if siret and ki.siret and siret != ki.siret:
            raise ApiError(403, "SIRET_DIFFERENT", champ,
                           f"la clé API est celle de l'établissement SIRET {ki.siret} ; le dossier relève "
                           f"d'un autre établissement du même SIREN, SIRET {siret} ({champ}) : "
                           "utiliser la clé de cet établissement, ou celle du SIREN")


async def read_json(request: Request, limit: int) -> Any:
    return (await read_json_raw(request, limit))[0]


async def read_json_raw(request: Request, limit: int) -> tuple[Any, str]:
    cl = request.headers.get("content-length")
    if cl is not None and (not cl.isdigit() or int(cl) > limit):
        raise ApiError(413, "TROP_VOLUMINEUX", None, f"corps limité à {limit} octets")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "TROP_VOLUMINEUX", None, f"corps limité à {limit} octets")
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant), text
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "JSON_INVALIDE", None, f"corps JSON illisible : {str(exc)[:200]}")


def _reject_constant(name: str):
    raise ValueError(f"{name} n'est pas du JSON valide")


def parse_page(value: str | None, champ: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 9 or not (lo <= int(value) <= hi):
        raise ApiError(400, "VALEUR", champ, f"{champ} doit être un entier entre {lo} et {hi}")
    return int(value)


def check_ni(value: str | None, champ: str) -> str:
    if not value:
        raise ApiError(400, "OBLIGATOIRE", champ, f"paramètre {champ} obligatoire")
    if not RE_NI.match(value):
        raise ApiError(400, "FORMAT", champ, f"{champ}: 1 à 64 caractères imprimables")
    return value


def base_url(request: Request) -> str:
    """scheme://host[:port] as the client called it (for absolute next links)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def paging(prof: Profile, request: Request, s: OpcoSettings, paged: bool = True) -> profiles.Paging:
    try:
        return profiles.read_paging(prof, request.query_params, default=s.page_default, maximum=s.page_max,
                                    now=request.app.state.sandbox.store.now(), parse_int=parse_page,
                                    parse_time=parse_time, paged=paged)
    except ValueError as exc:   # an unreadable cursor (ApiError passes through)
        raise ApiError(400, "CURSEUR_INVALIDE", "curseur", str(exc))


def create_app(cfg: dict | None = None, db_path: str | None = None) -> tuple[Any, Sandbox]:
    """Returns (asgi_app, sandbox): the FastAPI app wrapped by the fault layer."""
    cfg = cfg or load_config(None)
    sb = Sandbox(cfg, db_path)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def flusher():
            while True:
                await asyncio.sleep(1.0)
                try:
                    sb.store.flush_stats()
                except Exception:  # pragma: no cover
                    pass
        task = asyncio.create_task(flusher())
        try:
            yield
        finally:
            task.cancel()
            sb.store.close()

    app = FastAPI(title="OPCO sandbox — API CFA-OPCO (ApiEchangeCFA)", version="1.0",
                  description="Local server of the API CFA-OPCO norm for the eleven OPCOs. "
                              "Test-only routes under /_sandbox are not part of this schema.",
                  lifespan=lifespan)
    app.state.sandbox = sb

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return sb.error_response(request.url.path, exc.status, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        errors, status = [], 400
        for e in exc.errors()[:20]:
            loc = [str(x) for x in e.get("loc", ())]
            if loc and loc[0] == "path":
                status = 404
            errors.append({"code": "PARAMETRE_INVALIDE", "champ": ".".join(loc[1:]) or None,
                           "message": str(e.get("msg", "paramètre invalide"))[:300]})
        if status == 404:
            errors = [{"code": "OPCO_INCONNU", "champ": None, "message": "OPCO inconnu de la sandbox"}]
        return sb.error_response(request.url.path, status, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        code = {404: "ROUTE_INCONNUE", 405: "METHODE_NON_AUTORISEE"}.get(exc.status_code, "ERREUR_HTTP")
        return sb.error_response(request.url.path, exc.status_code,
                                 [{"code": code, "champ": None, "message": str(exc.detail)}],
                                 getattr(exc, "headers", None))

    hdr_params = schemas.header_parameters()

    def api(route: str, summary: str, body: dict | None = None,
            responses: dict | None = None, oauth: bool = False):
        """Declare the handler of one route of the client's table (norm.ROUTES: one list of
        routes for client and sandbox)."""
        method, path = ROUTES[route].method, ROUTES[route].path
        extra: dict = {"parameters": list(hdr_params)}
        if body is not None:
            extra["requestBody"] = body
        deco = getattr(app, method.lower())
        return deco("/{opco}/ApiEchangeCFA" + path, summary=summary, openapi_extra=extra,
                    responses=schemas.responses(responses), tags=["ApiEchangeCFA"],
                    response_class=Response, operation_id=route)

    # ---- routes -----------------------------------------------------------------
    @api("status", "Health of the OPCO's API")
    async def status(request: Request, opco: OpcoCode):
        o = opco.value
        sb.gate(request, o, "status")
        return sb.ok(o, "status", {"status": "OK", "opco": o, "nom": sb.caps[o]["name"], "api": "ApiEchangeCFA",
                                   "date": iso(sb.store.now())})

    @api("cfakeyinfo", "Key check for a SIREN")
    async def cfakeyinfo(request: Request, opco: OpcoCode, siren: str | None = Query(None)):
        o = opco.value
        ki, _ = sb.gate(request, o, "cfakeyinfo")
        if not siren or len(siren) != 9 or not siren.isdigit():
            raise ApiError(400, "FORMAT", "siren", "paramètre siren obligatoire : 9 chiffres")
        fin = ki.expires.isoformat()
        today = sb.store.today()
        if siren != ki.siren:
            return J({"status": "error", "dateFinValidite": fin,
                      "comment": f"clé émise pour le SIREN {ki.siren}, pas pour {siren}"})
        if ki.expires < today:
            return J({"status": "error", "dateFinValidite": fin, "comment": f"clé expirée le {fin}"})
        days = (ki.expires - today).days
        return J({"status": "success", "dateFinValidite": fin,
                  "comment": f"clé valide jusqu'au {fin} ({days} jours)"})

    async def post_dossier(request: Request, o: str, route: str, version: str):
        ki, s = sb.gate(request, o, route)
        body, raw = await read_json_raw(request, sb.cfg["max_body_bytes"])
        errors, facts = validate_dossier(body)
        if errors:
            raise ApiError(422, "", None, "", errors=errors)
        sb.check_siren(ki, facts.get("of_siret"), "organismeFormation.siret")
        try:
            status_code, out = sb.store.create_dossier(o, ki.siren, version, body, facts, s, sb.idcc,
                                                       sb.opco_names, raw if len(raw) < 200_000 else None)
        except Rejected as r:
            raise ApiError(r.status, "", None, "", errors=r.errors)
        return sb.ok(o, route, out, status_code)

    @api("dossiers_v1", "Send a dossier (v1)", body=schemas.body(schemas.DOSSIER))
    async def dossiers_v1(request: Request, opco: OpcoCode):
        return await post_dossier(request, opco.value, "dossiers_v1", "v1")

    @api("dossiers_v2", "Send a dossier (v2)", body=schemas.body(schemas.DOSSIER))
    async def dossiers_v2(request: Request, opco: OpcoCode):
        return await post_dossier(request, opco.value, "dossiers_v2", "v2")

    @api("dossier_read_v2", "Read one dossier back")
    async def dossier_read(request: Request, opco: OpcoCode, numeroInterne: str | None = Query(None)):
        o = opco.value
        ki, s = sb.gate(request, o, "dossier_read_v2")
        ni = check_ni(numeroInterne, "numeroInterne")
        row = sb.store.find_dossier(o, ki.siren, ni)
        if row is None:
            raise ApiError(404, "DOSSIER_INCONNU", "numeroInterne", f"dossier {ni} inconnu pour ce SIREN")
        return sb.ok(o, "dossier_read_v2", sb.store.full_dossier(row, sb.store.now(), s.certificat_requis))

    @api("liste_v1", "States of listed dossiers (at most 100)")
    async def liste(request: Request, opco: OpcoCode, numerosInternes: str | None = Query(None)):
        o = opco.value
        ki, _ = sb.gate(request, o, "liste_v1")
        if not numerosInternes:
            raise ApiError(400, "OBLIGATOIRE", "numerosInternes", "paramètre numerosInternes obligatoire")
        nis = [x.strip() for x in numerosInternes.split(",") if x.strip()]
        if not nis or len(nis) > 100:
            raise ApiError(400, "VALEUR", "numerosInternes", "de 1 à 100 numéros séparés par des virgules")
        for ni in nis:
            check_ni(ni, "numerosInternes")
        found, missing = sb.store.liste(o, ki.siren, nis)
        prof = sb.profile(o)
        if not prof:
            return J({"dossiers": found, "inconnus": missing})
        return profiles.render_list(prof, "liste_v1", found, len(found), profiles.Paging(0, None),
                                    url=request.url.path, base_url=base_url(request),
                                    extra={"inconnus": missing})

    @api("etats_v2", "Paged states, optionally in a state-change window")
    async def etats(request: Request, opco: OpcoCode, numeroPage: str | None = Query(None),
                    taillePage: str | None = Query(None), dateDebut: str | None = Query(None),
                    dateFin: str | None = Query(None)):
        o = opco.value
        ki, s = sb.gate(request, o, "etats_v2")
        prof = sb.profile(o)
        if not prof:
            page = parse_page(numeroPage, "numeroPage", 1, 1, 10_000_000)
            size = parse_page(taillePage, "taillePage", s.page_default, 1, s.page_max)
            debut = parse_time(dateDebut, "dateDebut")
            fin = parse_time(dateFin, "dateFin")
            return J(sb.store.etats(o, ki.siren, page, size, debut, fin))
        pg = paging(prof, request, s)
        total, items = sb.store.etats_slice(o, ki.siren, pg.offset, pg.limit, pg.debut, pg.fin)
        return profiles.render_list(prof, "etats_v2", items, total, pg, url=request.url.path,
                                    base_url=base_url(request))

    @api("documents_v1", "Attach a document (multipart)", body=schemas.DOCUMENT_BODY)
    async def documents(request: Request, opco: OpcoCode):
        o = opco.value
        ki, s = sb.gate(request, o, "documents_v1")
        limit = sb.cfg["max_document_bytes"]
        cl = request.headers.get("content-length")
        if cl is not None and (not cl.isdigit() or int(cl) > limit):
            raise ApiError(413, "TROP_VOLUMINEUX", None, f"document limité à {limit} octets")
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise ApiError(400, "FORMAT", None, "multipart/form-data attendu (typeFichier, objets, fichier)")
        try:
            form = await request.form(max_files=2, max_fields=20)
        except Exception as exc:
            raise ApiError(400, "FORMAT", None, f"multipart illisible : {str(exc)[:200]}")
        errors = []
        tf = form.get("typeFichier")
        if not isinstance(tf, str) or tf not in DOC_TYPES:
            errors.append({"code": "VALEUR", "champ": "typeFichier",
                           "message": f"typeFichier doit valoir l'une de {list(DOC_TYPES)}"})
        objets = None
        raw = form.get("objets")
        if not isinstance(raw, str):
            errors.append({"code": "OBLIGATOIRE", "champ": "objets", "message": "objets (texte JSON) obligatoire"})
        else:
            try:
                objets = json.loads(raw)
            except (ValueError, RecursionError):
                objets = None
            ok = isinstance(objets, list) and 1 <= len(objets) <= 50 and all(
                isinstance(x, dict) and x.get("typeObjet") == "DOSSIER" and isinstance(x.get("idObjet"), str)
                and RE_NI.match(x["idObjet"]) for x in objets)
            if not ok:
                objets = None
                errors.append({"code": "FORMAT", "champ": "objets", "message":
                               'objets : liste JSON [{"typeObjet": "DOSSIER", "idObjet": "<numeroInterne>"}]'})
        f = form.get("fichier")
        if f is None or isinstance(f, str):
            errors.append({"code": "OBLIGATOIRE", "champ": "fichier", "message": "fichier obligatoire"})
        if errors:
            await form.close()
            raise ApiError(422, "", None, "", errors=errors)
        data = await f.read()
        await form.close()
        if not data:
            raise ApiError(422, "VIDE", "fichier", "fichier vide")
        try:
            out = sb.store.add_document(o, ki.siren, tf, objets, f.filename or "document",
                                        f.content_type or "application/octet-stream", data, s)
        except NotFound as nf:
            raise ApiError(404, "DOSSIER_INCONNU", nf.args[0], nf.args[1])
        return sb.ok(o, "documents_v1", out, 201)

    async def json_route(request: Request, o: str, route: str, validator):
        ki, s = sb.gate(request, o, route)
        body = await read_json(request, sb.cfg["max_body_bytes"])
        errors, facts = validator(body)
        if errors:
            raise ApiError(422, "", None, "", errors=errors)
        return ki, s, body, facts

    @api("conventions_v1", "Training agreement", body=schemas.body(schemas.CONVENTION))
    async def conventions(request: Request, opco: OpcoCode):
        o = opco.value
        ki, s, body, facts = await json_route(request, o, "conventions_v1", validate_convention)
        try:
            return sb.ok(o, "conventions_v1", sb.store.add_convention(o, ki.siren, body, facts, s), 201)
        except NotFound as nf:
            raise ApiError(404, "DOSSIER_INCONNU", nf.args[0], nf.args[1])
        except Rejected as r:
            raise ApiError(r.status, "", None, "", errors=r.errors)

    @api("certificats_v2", "Certificat de réalisation (AFDAS)",
         body=schemas.body(schemas.CERTIFICAT))
    async def certificats(request: Request, opco: OpcoCode):
        o = opco.value
        ki, s, body, facts = await json_route(request, o, "certificats_v2", validate_certificat)
        try:
            code, out = sb.store.add_certificat(o, ki.siren, body, facts, s)
        except NotFound as nf:
            raise ApiError(404, "DOSSIER_INCONNU", nf.args[0], nf.args[1])
        except Rejected as r:
            raise ApiError(r.status, "", None, "", errors=r.errors)
        return sb.ok(o, "certificats_v2", out, code)

    @api("factures_v1", "Invoice an échéance", body=schemas.body(schemas.FACTURE))
    async def factures(request: Request, opco: OpcoCode):
        o = opco.value
        ki, s, body, facts = await json_route(request, o, "factures_v1", validate_facture)
        try:
            code, out = sb.store.facture(o, ki.siren, body, facts, s)
        except NotFound as nf:
            raise ApiError(404, "DOSSIER_INCONNU", nf.args[0], nf.args[1])
        except Rejected as r:
            raise ApiError(r.status, "", None, "", errors=r.errors)
        return sb.ok(o, "factures_v1", out, code)

    @api("factures_etats_v2", "Invoice states")
    async def factures_etats(request: Request, opco: OpcoCode, numeroInterneFacture: str | None = Query(None),
                             dateDebut: str | None = Query(None), dateFin: str | None = Query(None)):
        o = opco.value
        ki, s = sb.gate(request, o, "factures_etats_v2")
        nif = check_ni(numeroInterneFacture, "numeroInterneFacture") if numeroInterneFacture else None
        prof = sb.profile(o)
        if not prof:
            out = sb.store.factures_etats(o, ki.siren, nif, parse_time(dateDebut, "dateDebut"),
                                          parse_time(dateFin, "dateFin"))
            return J({"factures": out, "count": len(out)})
        pg = paging(prof, request, s, paged=False)
        out = sb.store.factures_etats(o, ki.siren, nif, pg.debut, pg.fin)
        chunk = out[pg.offset:pg.offset + pg.limit] if pg.limit is not None else out
        return profiles.render_list(prof, "factures_etats_v2", chunk, len(out), pg, url=request.url.path,
                                    base_url=base_url(request))

    @api("rupture_v2", "Early termination of a contract",
         body=schemas.body(schemas.RUPTURE))
    async def rupture(request: Request, opco: OpcoCode):
        o = opco.value
        ki, s, body, facts = await json_route(request, o, "rupture_v2", validate_rupture)
        try:
            return sb.ok(o, "rupture_v2", sb.store.rupture(o, ki.siren, body, facts))
        except NotFound as nf:
            raise ApiError(404, "DOSSIER_INCONNU", nf.args[0], nf.args[1])
        except Rejected as r:
            raise ApiError(r.status, "", None, "", errors=r.errors)

    @app.post("/{opco}/oauth/token", tags=["OAuth2"], summary="OAuth2 client_credentials token",
              response_class=Response, openapi_extra={"requestBody": schemas.TOKEN_BODY},
              responses=schemas.responses(None), operation_id="oauth_token")
    async def token(request: Request, opco: OpcoCode):
        o = opco.value
        if not sb.caps[o]["oauth2_v2"]:
            raise ApiError(404, "ROUTE_NON_SERVIE", None, f"{sb.caps[o]['name']} n'utilise pas OAuth2")
        ctype = request.headers.get("content-type", "")
        data: dict = {}
        try:
            if ctype.startswith("application/json"):
                raw = await read_json(request, 10_000)
                data = raw if isinstance(raw, dict) else {}
            else:
                form = await request.form(max_files=0, max_fields=10)
                data = {k: v for k, v in form.items() if isinstance(v, str)}
        except ApiError:
            raise
        except Exception:
            data = {}
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")
                data.setdefault("client_id", cid)
                data.setdefault("client_secret", sec)
            except Exception:
                pass
        if data.get("grant_type") != "client_credentials":
            return J({"error": "unsupported_grant_type", "error_description": "grant_type=client_credentials attendu",
                      "erreurs": [{"code": "GRANT_TYPE", "champ": "grant_type",
                                   "message": "grant_type=client_credentials attendu"}]}, 400)
        cid, sec = data.get("client_id"), data.get("client_secret")
        known = sb.oauth_clients.get(o, {})
        if not isinstance(cid, str) or not isinstance(sec, str) or known.get(cid) != sec:
            return J({"error": "invalid_client", "error_description": "client_id ou client_secret invalide",
                      "erreurs": [{"code": "CLIENT_INVALIDE", "champ": "client_id",
                                   "message": "client_id ou client_secret invalide"}]}, 401,
                     {"WWW-Authenticate": 'Basic realm="oauth"'})
        tok = secrets.token_urlsafe(32)
        exp = sb.store.now() + sb.token_lifetime_us
        sb.store.add_token(tok, o, cid, exp)
        return J({"access_token": tok, "token_type": "Bearer",
                  "expires_in": int(sb.token_lifetime_us // US), "scope": "ApiEchangeCFA"})

    add_introspection(app, sb)
    return FaultLayer(app, sb), sb
