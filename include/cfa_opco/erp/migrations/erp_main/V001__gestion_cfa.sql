-- Demo ERP "Gestion CFA" (vendor A): the main management database of the network.
-- Normalised reference data (companies, learners, masters, sessions) reused by contracts,
-- as a CFA types them once and reuses them.

CREATE TABLE etablissement (               -- CFA establishment (one row per site)
    id              serial PRIMARY KEY,
    code_site       text NOT NULL UNIQUE,
    siret           char(14) NOT NULL,
    uai             char(8) NOT NULL,
    denomination    text NOT NULL,
    adresse_numero  text, adresse_voie text, adresse_complement text,
    code_postal     char(5), commune text
);

CREATE TABLE entreprise (                  -- employer
    id                   serial PRIMARY KEY,
    siret                text,             -- as typed by the CFA: may be wrong
    raison_sociale       text NOT NULL,
    code_naf             text,
    code_idcc            text,
    libelle_idcc         text,
    effectif             integer,
    type_employeur       smallint,
    employeur_specifique smallint DEFAULT 0,
    secteur_public       boolean NOT NULL DEFAULT false,
    adresse_numero text, adresse_voie text, adresse_complement text,
    code_postal text, commune text,
    telephone text, email text,
    modifie_le           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE apprenant (                   -- learner
    id                 serial PRIMARY KEY,
    nom                text NOT NULL,
    nom_usage          text,
    prenom             text NOT NULL,
    sexe               char(1),
    date_naissance     date,
    commune_naissance  text,
    departement_naissance text,
    nir                text,
    nationalite        smallint,
    regime_social      smallint,
    adresse_numero text, adresse_voie text, adresse_complement text,
    code_postal text, commune text,
    telephone text, email text,
    rqth               boolean NOT NULL DEFAULT false,
    sportif_haut_niveau boolean NOT NULL DEFAULT false,
    projet_creation_entreprise boolean NOT NULL DEFAULT false,
    situation_avant_contrat smallint,
    dernier_diplome    smallint,
    representant_nom   text,
    representant_prenom text,
    modifie_le         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE maitre_apprentissage (
    id              serial PRIMARY KEY,
    entreprise_id   integer NOT NULL REFERENCES entreprise(id),
    nom text NOT NULL, prenom text NOT NULL,
    date_naissance  date,
    emploi          text,
    diplome         text
);

CREATE TABLE formation (                   -- certification prepared
    id          serial PRIMARY KEY,
    code_rncp   text,
    code_cfd    text,
    intitule    text NOT NULL
);

CREATE TABLE session_formation (           -- a cohort of a formation at a site
    id               serial PRIMARY KEY,
    formation_id     integer NOT NULL REFERENCES formation(id),
    etablissement_id integer NOT NULL REFERENCES etablissement(id),
    code_session     text NOT NULL UNIQUE,
    date_debut       date NOT NULL,
    date_fin         date NOT NULL,
    duree_heures     integer NOT NULL,
    modifie_le       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contrat (
    id                 serial PRIMARY KEY,
    numero_interne     text NOT NULL UNIQUE,  -- the CFA's dossier number (numeroInterne)
    apprenant_id       integer NOT NULL REFERENCES apprenant(id),
    entreprise_id      integer NOT NULL REFERENCES entreprise(id),
    session_id         integer NOT NULL REFERENCES session_formation(id),
    maitre1_id         integer REFERENCES maitre_apprentissage(id),
    maitre2_id         integer REFERENCES maitre_apprentissage(id),
    type_contrat       smallint NOT NULL DEFAULT 11,
    type_derogation    smallint,
    numero_contrat_precedent text,            -- DECA number of a previous contract (21-23)
    date_conclusion    date,
    date_debut         date,
    date_fin           date,
    duree_hebdo_heures smallint NOT NULL DEFAULT 35,
    duree_hebdo_minutes smallint NOT NULL DEFAULT 0,
    salaire_embauche   numeric(9,2),
    smc                numeric(9,2),
    caisse_retraite    text,
    numero_deca        text,                  -- written back once the OPCO has registered it
    numero_externe_opco text,                 -- written back
    etat_opco          text,                  -- written back: last state read from the OPCO
    etat_opco_le       timestamptz,
    date_rupture       date,
    motif_rupture      text,
    statut             text NOT NULL DEFAULT 'ACTIF',  -- ACTIF, ANNULE
    modifie_le         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contrat_modifie_le ON contrat (modifie_le);

CREATE TABLE contrat_remuneration (       -- remunerationsAnnuelles
    contrat_id  integer NOT NULL REFERENCES contrat(id) ON DELETE CASCADE,
    annee       smallint NOT NULL,
    date_debut  date NOT NULL,
    date_fin    date NOT NULL,
    taux        numeric(5,2) NOT NULL,
    base        text NOT NULL DEFAULT 'SMIC',  -- SMIC or SMC
    PRIMARY KEY (contrat_id, annee)
);

CREATE TABLE avenant (
    id                 serial PRIMARY KEY,
    numero_interne     text NOT NULL UNIQUE,   -- <numero_interne du contrat>-A<n>
    contrat_id         integer NOT NULL REFERENCES contrat(id),  -- the contract it modifies (data)
    contrat_precedent_id integer REFERENCES contrat(id),       -- "contrat précédent" field of the form
    type_avenant       smallint NOT NULL,      -- 31..38
    numero_contrat_precedent text,             -- DECA number of the amended contract
    date_effet         date,
    nouvelle_date_fin  date,
    nouveau_salaire    numeric(9,2),
    motif              text,
    modifie_le         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE piece (                       -- supporting documents (pièces justificatives)
    id           serial PRIMARY KEY,
    contrat_id   integer NOT NULL REFERENCES contrat(id),
    type_piece   text NOT NULL,            -- CONVENTION_FORMATION, CERFA_SIGNE, AUTRE
    nom_fichier  text NOT NULL,
    type_mime    text NOT NULL DEFAULT 'application/pdf',
    contenu      bytea,                    -- stored in the database...
    chemin       text,                     -- ...or as a file on disk
    depose_le    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX piece_contrat ON piece (contrat_id);

CREATE TABLE echeance (                    -- payment schedule as the CFA follows it
    id            serial PRIMARY KEY,
    contrat_id    integer NOT NULL REFERENCES contrat(id),
    numero        smallint NOT NULL,
    date_echeance date NOT NULL,
    montant       numeric(10,2) NOT NULL,
    statut        text NOT NULL DEFAULT 'A_FACTURER',  -- A_FACTURER, FACTUREE, REGLEE
    UNIQUE (contrat_id, numero)
);

CREATE TABLE retour_opco (                 -- write-back of OPCO decisions (motifs, anomalies)
    id            bigserial PRIMARY KEY,
    numero_interne text NOT NULL,
    etat          text NOT NULL,
    code          text,
    message       text,
    piece         text,
    recu_le       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retour_opco_numero ON retour_opco (numero_interne);
