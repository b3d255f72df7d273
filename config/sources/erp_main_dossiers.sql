-- Mapping of the "Gestion CFA" ERP (erp_main) onto the canonical dossier model
-- (cfa_opco.dossier.model). One row per dossier: every contract, and every amendment
-- (avenant) as a dossier of its own carrying the amended contract's data.
WITH remu AS (
    SELECT contrat_id,
           max(date_debut) FILTER (WHERE annee = 1) AS d1, max(date_fin) FILTER (WHERE annee = 1) AS f1,
           max(taux) FILTER (WHERE annee = 1) AS t1, max(base) FILTER (WHERE annee = 1) AS b1,
           max(date_debut) FILTER (WHERE annee = 2) AS d2, max(date_fin) FILTER (WHERE annee = 2) AS f2,
           max(taux) FILTER (WHERE annee = 2) AS t2, max(base) FILTER (WHERE annee = 2) AS b2,
           max(date_debut) FILTER (WHERE annee = 3) AS d3, max(date_fin) FILTER (WHERE annee = 3) AS f3,
           max(taux) FILTER (WHERE annee = 3) AS t3, max(base) FILTER (WHERE annee = 3) AS b3,
           max(date_debut) FILTER (WHERE annee = 4) AS d4, max(date_fin) FILTER (WHERE annee = 4) AS f4,
           max(taux) FILTER (WHERE annee = 4) AS t4, max(base) FILTER (WHERE annee = 4) AS b4
    FROM contrat_remuneration GROUP BY contrat_id
),
dossier AS (
    SELECT c.id AS contrat_id, c.numero_interne, 'CONTRAT' AS nature, NULL::text AS base_numero_interne,
           c.type_contrat, c.numero_contrat_precedent, NULL::date AS date_effet_avenant,
           c.date_fin, c.salaire_embauche, c.modifie_le
    FROM contrat c
    UNION ALL
    SELECT a.contrat_id, a.numero_interne, 'AVENANT', prev.numero_interne,
           a.type_avenant, COALESCE(a.numero_contrat_precedent, prev.numero_deca), a.date_effet,
           COALESCE(a.nouvelle_date_fin, c.date_fin), COALESCE(a.nouveau_salaire, c.salaire_embauche),
           greatest(a.modifie_le, c.modifie_le)
    FROM avenant a
    JOIN contrat c ON c.id = a.contrat_id
    LEFT JOIN contrat prev ON prev.id = a.contrat_precedent_id
)
SELECT
    'erp_main' AS source_id,
    d.numero_interne,
    d.nature,
    d.base_numero_interne,
    c.statut,
    et.code_site AS site_code,
    'etablissement:' || et.id AS etablissement_ref,
    'entreprise:' || en.id AS entreprise_ref,
    'apprenant:' || ap.id AS apprenant_ref,
    'session:' || s.id AS session_ref,
    'maitre:' || m1.id AS maitre1_ref,
    'maitre:' || m2.id AS maitre2_ref,
    greatest(d.modifie_le, en.modifie_le, ap.modifie_le, s.modifie_le, cv.modifie_le) AS source_modifie_le,
    c.date_rupture,
    c.motif_rupture,
    -- the convention de formation: the contract's own (an avenant sends none)
    cv.cout_pedagogique AS convention_cout_pedagogique,
    cv.montant_annee_1 AS convention_cout_annee1,
    cv.montant_annee_2 AS convention_cout_annee2,
    cv.montant_annee_3 AS convention_cout_annee3,
    cv.montant_annee_4 AS convention_cout_annee4,
    cv.frais_premier_equipement AS convention_frais_equipement,
    cv.frais_restauration AS convention_frais_repas,
    cv.frais_hebergement AS convention_frais_hebergement,
    cv.date_debut AS convention_date_debut,
    cv.date_fin AS convention_date_fin,
    en.siret AS employeur_siret,
    en.raison_sociale AS employeur_denomination,
    en.adresse_numero AS employeur_adresse_numero,
    en.adresse_voie AS employeur_adresse_voie,
    en.adresse_complement AS employeur_adresse_complement,
    en.code_postal AS employeur_adresse_code_postal,
    en.commune AS employeur_adresse_commune,
    en.type_employeur AS employeur_type,
    en.employeur_specifique,
    en.code_naf AS employeur_naf,
    en.effectif AS employeur_effectif,
    en.code_idcc AS employeur_idcc,
    en.libelle_idcc AS employeur_libelle_idcc,
    en.secteur_public AS employeur_public,
    en.telephone AS employeur_telephone,
    en.email AS employeur_courriel,
    ap.nom AS apprenti_nom,
    ap.nom_usage AS apprenti_nom_usage,
    ap.prenom AS apprenti_prenom,
    ap.sexe AS apprenti_sexe,
    ap.date_naissance AS apprenti_date_naissance,
    ap.commune_naissance AS apprenti_commune_naissance,
    ap.departement_naissance AS apprenti_departement_naissance,
    ap.nir AS apprenti_nir,
    ap.nationalite AS apprenti_nationalite,
    ap.regime_social AS apprenti_regime_social,
    ap.adresse_numero AS apprenti_adresse_numero,
    ap.adresse_voie AS apprenti_adresse_voie,
    ap.adresse_complement AS apprenti_adresse_complement,
    ap.code_postal AS apprenti_adresse_code_postal,
    ap.commune AS apprenti_adresse_commune,
    ap.telephone AS apprenti_telephone,
    ap.email AS apprenti_courriel,
    ap.rqth AS apprenti_handicap,
    ap.sportif_haut_niveau AS apprenti_sportif_haut_niveau,
    ap.projet_creation_entreprise AS apprenti_projet_creation,
    ap.situation_avant_contrat AS apprenti_situation_avant,
    ap.dernier_diplome AS apprenti_dernier_diplome,
    ap.representant_nom,
    ap.representant_prenom,
    m1.nom AS maitre1_nom, m1.prenom AS maitre1_prenom, m1.date_naissance AS maitre1_date_naissance,
    m1.emploi AS maitre1_emploi, m1.diplome AS maitre1_diplome,
    m2.nom AS maitre2_nom, m2.prenom AS maitre2_prenom, m2.date_naissance AS maitre2_date_naissance,
    m2.emploi AS maitre2_emploi, m2.diplome AS maitre2_diplome,
    d.type_contrat AS contrat_type,
    c.type_derogation AS contrat_derogation,
    d.numero_contrat_precedent AS contrat_numero_precedent,
    c.date_conclusion AS contrat_date_conclusion,
    c.date_debut AS contrat_date_debut,
    d.date_fin AS contrat_date_fin,
    d.date_effet_avenant AS contrat_date_effet_avenant,
    c.duree_hebdo_heures AS contrat_hebdo_heures,
    c.duree_hebdo_minutes AS contrat_hebdo_minutes,
    d.salaire_embauche AS contrat_salaire_embauche,
    c.smc AS contrat_smc,
    c.caisse_retraite AS contrat_caisse_retraite,
    r.d1 AS remu1_date_debut, r.f1 AS remu1_date_fin, r.t1 AS remu1_taux, r.b1 AS remu1_base,
    r.d2 AS remu2_date_debut, r.f2 AS remu2_date_fin, r.t2 AS remu2_taux, r.b2 AS remu2_base,
    r.d3 AS remu3_date_debut, r.f3 AS remu3_date_fin, r.t3 AS remu3_taux, r.b3 AS remu3_base,
    r.d4 AS remu4_date_debut, r.f4 AS remu4_date_fin, r.t4 AS remu4_taux, r.b4 AS remu4_base,
    f.code_rncp AS formation_rncp,
    f.code_cfd AS formation_cfd,
    f.intitule AS formation_intitule,
    s.date_debut AS formation_date_debut,
    s.date_fin AS formation_date_fin,
    s.duree_heures AS formation_duree_heures,
    et.siret AS cfa_siret,
    et.uai AS cfa_uai,
    et.denomination AS cfa_denomination,
    et.adresse_numero AS cfa_adresse_numero,
    et.adresse_voie AS cfa_adresse_voie,
    et.adresse_complement AS cfa_adresse_complement,
    et.code_postal AS cfa_adresse_code_postal,
    et.commune AS cfa_adresse_commune
FROM dossier d
JOIN contrat c ON c.id = d.contrat_id
JOIN apprenant ap ON ap.id = c.apprenant_id
JOIN entreprise en ON en.id = c.entreprise_id
JOIN session_formation s ON s.id = c.session_id
JOIN formation f ON f.id = s.formation_id
JOIN etablissement et ON et.id = s.etablissement_id
LEFT JOIN maitre_apprentissage m1 ON m1.id = c.maitre1_id
LEFT JOIN maitre_apprentissage m2 ON m2.id = c.maitre2_id
LEFT JOIN remu r ON r.contrat_id = c.id
LEFT JOIN convention_formation cv ON cv.contrat_id = c.id AND d.nature = 'CONTRAT'
