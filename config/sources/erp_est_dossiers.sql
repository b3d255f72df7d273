-- Mapping of the "Ypso Formation" ERP (erp_est) onto the canonical dossier model.
-- Contracts and amendments share T_CONTRAT (CTR_NATURE 'C' or 'A'); an amendment row is a
-- full copy of the contract as amended, CTR_PARENT_ID naming the amended contract.
-- Dates (DD/MM/YYYY) and training hours are free text in this product: they are returned
-- as typed and read by the connector row by row (cfa_opco.dossier.fields.parse_value), so
-- that an impossible date (31/02) or a word in a number quarantines its own row with a
-- message instead of failing this whole query. The only dates computed here (the yearly pay
-- periods) go through a guarded conversion that yields NULL for an impossible date.
WITH ctr AS (
    SELECT t.*,
           CASE WHEN t."CTR_DDEB" ~ '^\d{2}/(0[1-9]|1[0-2])/[1-9]\d{3}$' THEN
                CASE WHEN substr(t."CTR_DDEB", 1, 2)::int BETWEEN 1 AND extract(day from
                          make_date(substr(t."CTR_DDEB", 7, 4)::int, substr(t."CTR_DDEB", 4, 2)::int, 1)
                          + interval '1 month - 1 day')
                     THEN to_date(t."CTR_DDEB", 'DD/MM/YYYY') END END AS ddeb,
           CASE WHEN t."CTR_DFIN" ~ '^\d{2}/(0[1-9]|1[0-2])/[1-9]\d{3}$' THEN
                CASE WHEN substr(t."CTR_DFIN", 1, 2)::int BETWEEN 1 AND extract(day from
                          make_date(substr(t."CTR_DFIN", 7, 4)::int, substr(t."CTR_DFIN", 4, 2)::int, 1)
                          + interval '1 month - 1 day')
                     THEN to_date(t."CTR_DFIN", 'DD/MM/YYYY') END END AS dfin
    FROM "T_CONTRAT" t
)
SELECT
    'erp_est' AS source_id,
    c."CTR_REF" AS numero_interne,
    CASE c."CTR_NATURE" WHEN 'A' THEN 'AVENANT' ELSE 'CONTRAT' END AS nature,
    p."CTR_REF" AS base_numero_interne,
    CASE c."CTR_ANNULE" WHEN 'O' THEN 'ANNULE' ELSE 'ACTIF' END AS statut,
    'EST-' || si."SITE_ID" AS site_code,
    'T_SITE:' || si."SITE_ID" AS etablissement_ref,
    'T_ENTREPRISE:' || e."ENT_ID" AS entreprise_ref,
    'T_STAGIAIRE:' || s."STG_ID" AS apprenant_ref,
    'T_ACTION:' || a."ACT_ID" AS session_ref,
    'T_TUTEUR:' || t1."TUT_ID" AS maitre1_ref,
    'T_TUTEUR:' || t2."TUT_ID" AS maitre2_ref,
    greatest(c."CTR_MAJ", e."ENT_MAJ", s."STG_MAJ", a."ACT_MAJ", cv."CNV_MAJ") AT TIME ZONE 'Europe/Paris' AS source_modifie_le,
    NULL::date AS date_rupture,
    NULL::text AS motif_rupture,
    -- the convention de formation: the contract's own (an avenant sends none); dates as typed
    cv."CNV_COUT_PEDA" AS convention_cout_pedagogique,
    cv."CNV_MT_A1" AS convention_cout_annee1,
    cv."CNV_MT_A2" AS convention_cout_annee2,
    cv."CNV_MT_A3" AS convention_cout_annee3,
    cv."CNV_MT_A4" AS convention_cout_annee4,
    cv."CNV_EQUIP" AS convention_frais_equipement,
    cv."CNV_REPAS" AS convention_frais_repas,
    cv."CNV_HEBERG" AS convention_frais_hebergement,
    cv."CNV_DDEB" AS convention_date_debut,
    cv."CNV_DFIN" AS convention_date_fin,
    regexp_replace(e."ENT_SIRET", '\s', '', 'g') AS employeur_siret,
    e."ENT_RS" AS employeur_denomination,
    ea."ADR_NUM" AS employeur_adresse_numero,
    ea."ADR_VOIE" AS employeur_adresse_voie,
    ea."ADR_CPL" AS employeur_adresse_complement,
    ea."ADR_CP" AS employeur_adresse_code_postal,
    ea."ADR_VILLE" AS employeur_adresse_commune,
    e."ENT_TYPE" AS employeur_type,
    e."ENT_SPEC" AS employeur_specifique,
    -- this product stores the APE code without its dot (1071C): the CERFA mask is 00.00A
    CASE WHEN e."ENT_APE" ~ '^\d{4}[A-Z]$' THEN substr(e."ENT_APE", 1, 2) || '.' || substr(e."ENT_APE", 3)
         ELSE e."ENT_APE" END AS employeur_naf,
    e."ENT_EFF" AS employeur_effectif,
    e."ENT_CCN" AS employeur_idcc,
    e."ENT_CCN_LIB" AS employeur_libelle_idcc,
    e."ENT_PUBLIC" = 'O' AS employeur_public,
    e."ENT_TEL" AS employeur_telephone,
    e."ENT_MAIL" AS employeur_courriel,
    s."STG_NOM" AS apprenti_nom,
    s."STG_NOM_USAGE" AS apprenti_nom_usage,
    s."STG_PRENOM" AS apprenti_prenom,
    CASE s."STG_CIVILITE" WHEN 'M.' THEN 'M' WHEN 'Mme' THEN 'F' END AS apprenti_sexe,
    s."STG_DNAIS" AS apprenti_date_naissance,
    s."STG_LIEU_NAIS" AS apprenti_commune_naissance,
    s."STG_DEP_NAIS" AS apprenti_departement_naissance,
    NULLIF(s."STG_NSS", '') AS apprenti_nir,
    s."STG_NATIO" AS apprenti_nationalite,
    s."STG_REGIME" AS apprenti_regime_social,
    sa."ADR_NUM" AS apprenti_adresse_numero,
    sa."ADR_VOIE" AS apprenti_adresse_voie,
    sa."ADR_CPL" AS apprenti_adresse_complement,
    sa."ADR_CP" AS apprenti_adresse_code_postal,
    sa."ADR_VILLE" AS apprenti_adresse_commune,
    s."STG_TEL" AS apprenti_telephone,
    s."STG_MAIL" AS apprenti_courriel,
    s."STG_RQTH" = 'O' AS apprenti_handicap,
    s."STG_SHN" = 'O' AS apprenti_sportif_haut_niveau,
    s."STG_CREA" = 'O' AS apprenti_projet_creation,
    s."STG_SITU" AS apprenti_situation_avant,
    s."STG_DIPL" AS apprenti_dernier_diplome,
    NULLIF(split_part(s."STG_RESP_LEGAL", ' ', 1), '') AS representant_nom,
    NULLIF(substr(s."STG_RESP_LEGAL", length(split_part(s."STG_RESP_LEGAL", ' ', 1)) + 2), '') AS representant_prenom,
    t1."TUT_NOM" AS maitre1_nom, t1."TUT_PRENOM" AS maitre1_prenom,
    t1."TUT_DNAIS" AS maitre1_date_naissance,
    t1."TUT_FONCTION" AS maitre1_emploi, t1."TUT_DIPLOME" AS maitre1_diplome,
    t2."TUT_NOM" AS maitre2_nom, t2."TUT_PRENOM" AS maitre2_prenom,
    t2."TUT_DNAIS" AS maitre2_date_naissance,
    t2."TUT_FONCTION" AS maitre2_emploi, t2."TUT_DIPLOME" AS maitre2_diplome,
    c."CTR_TYPE" AS contrat_type,
    c."CTR_DEROG" AS contrat_derogation,
    COALESCE(c."CTR_NUM_PREC", p."CTR_DECA") AS contrat_numero_precedent,
    c."CTR_DSIGN" AS contrat_date_conclusion,
    c."CTR_DDEB" AS contrat_date_debut,
    c."CTR_DFIN" AS contrat_date_fin,
    c."CTR_DEFFET" AS contrat_date_effet_avenant,
    floor(c."CTR_HEBDO")::int AS contrat_hebdo_heures,
    round((c."CTR_HEBDO" - floor(c."CTR_HEBDO")) * 60)::int AS contrat_hebdo_minutes,
    c."CTR_SALAIRE" AS contrat_salaire_embauche,
    c."CTR_SMC" AS contrat_smc,
    c."CTR_RETRAITE" AS contrat_caisse_retraite,
    r.d1 AS remu1_date_debut, r.f1 AS remu1_date_fin, c."CTR_TAUX_A1" AS remu1_taux, CASE WHEN c."CTR_TAUX_A1" IS NOT NULL THEN c."CTR_BASE" END AS remu1_base,
    r.d2 AS remu2_date_debut, r.f2 AS remu2_date_fin, c."CTR_TAUX_A2" AS remu2_taux, CASE WHEN c."CTR_TAUX_A2" IS NOT NULL THEN c."CTR_BASE" END AS remu2_base,
    r.d3 AS remu3_date_debut, r.f3 AS remu3_date_fin, c."CTR_TAUX_A3" AS remu3_taux, CASE WHEN c."CTR_TAUX_A3" IS NOT NULL THEN c."CTR_BASE" END AS remu3_base,
    r.d4 AS remu4_date_debut, r.f4 AS remu4_date_fin, c."CTR_TAUX_A4" AS remu4_taux, CASE WHEN c."CTR_TAUX_A4" IS NOT NULL THEN c."CTR_BASE" END AS remu4_base,
    a."ACT_RNCP" AS formation_rncp,
    a."ACT_CFD" AS formation_cfd,
    a."ACT_LIB" AS formation_intitule,
    a."ACT_DEBUT" AS formation_date_debut,
    a."ACT_FIN" AS formation_date_fin,
    a."ACT_HEURES" AS formation_duree_heures,
    si."SITE_SIRET" AS cfa_siret,
    si."SITE_UAI" AS cfa_uai,
    si."SITE_LIB" AS cfa_denomination,
    sia."ADR_NUM" AS cfa_adresse_numero,
    sia."ADR_VOIE" AS cfa_adresse_voie,
    sia."ADR_CPL" AS cfa_adresse_complement,
    sia."ADR_CP" AS cfa_adresse_code_postal,
    sia."ADR_VILLE" AS cfa_adresse_commune
FROM ctr c
LEFT JOIN "T_CONTRAT" p ON p."CTR_ID" = c."CTR_PARENT_ID"
JOIN "T_STAGIAIRE" s ON s."STG_ID" = c."STG_ID"
JOIN "T_ENTREPRISE" e ON e."ENT_ID" = c."ENT_ID"
JOIN "T_ACTION" a ON a."ACT_ID" = c."ACT_ID"
JOIN "T_SITE" si ON si."SITE_ID" = a."SITE_ID"
LEFT JOIN "T_ADRESSE" ea ON ea."ADR_ID" = e."ADR_ID"
LEFT JOIN "T_ADRESSE" sa ON sa."ADR_ID" = s."ADR_ID"
LEFT JOIN "T_ADRESSE" sia ON sia."ADR_ID" = si."ADR_ID"
LEFT JOIN "T_TUTEUR" t1 ON t1."TUT_ID" = c."TUT1_ID"
LEFT JOIN "T_TUTEUR" t2 ON t2."TUT_ID" = c."TUT2_ID"
LEFT JOIN "T_CONVENTION" cv ON cv."CTR_ID" = c."CTR_ID" AND c."CTR_NATURE" = 'C'
LEFT JOIN LATERAL (
    SELECT
        (c.ddeb + interval '0 year')::date AS d1, least((c.ddeb + interval '1 year' - interval '1 day')::date, c.dfin) AS f1,
        CASE WHEN c."CTR_TAUX_A2" IS NOT NULL THEN (c.ddeb + interval '1 year')::date END AS d2,
        CASE WHEN c."CTR_TAUX_A2" IS NOT NULL THEN least((c.ddeb + interval '2 year' - interval '1 day')::date, c.dfin) END AS f2,
        CASE WHEN c."CTR_TAUX_A3" IS NOT NULL THEN (c.ddeb + interval '2 year')::date END AS d3,
        CASE WHEN c."CTR_TAUX_A3" IS NOT NULL THEN least((c.ddeb + interval '3 year' - interval '1 day')::date, c.dfin) END AS f3,
        CASE WHEN c."CTR_TAUX_A4" IS NOT NULL THEN (c.ddeb + interval '3 year')::date END AS d4,
        CASE WHEN c."CTR_TAUX_A4" IS NOT NULL THEN least((c.ddeb + interval '4 year' - interval '1 day')::date, c.dfin) END AS f4
) r ON true
