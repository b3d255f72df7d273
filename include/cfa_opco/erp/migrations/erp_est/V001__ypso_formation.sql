-- Demo ERP "Ypso Formation" (vendor B): the database of the CFA that joined the network
-- after a merger. Another vendor's naming and layout: upper-case T_ tables, one table for
-- contracts and their amendments, addresses in a shared table, pay rates as columns,
-- dates of birth and contract dates typed as text (DD/MM/YYYY) as the old product did.

CREATE TABLE "T_SITE" (
    "SITE_ID"   integer PRIMARY KEY,
    "SITE_SIRET" varchar(14) NOT NULL,
    "SITE_UAI"  varchar(8) NOT NULL,
    "SITE_LIB"  varchar(120) NOT NULL,
    "ADR_ID"    integer
);

CREATE TABLE "T_ADRESSE" (
    "ADR_ID"   integer PRIMARY KEY,
    "ADR_NUM"  varchar(10),
    "ADR_VOIE" varchar(120),
    "ADR_CPL"  varchar(120),
    "ADR_CP"   varchar(5),
    "ADR_VILLE" varchar(80)
);

CREATE TABLE "T_ENTREPRISE" (
    "ENT_ID"     integer PRIMARY KEY,
    "ENT_SIRET"  varchar(20),
    "ENT_RS"     varchar(120) NOT NULL,
    "ENT_APE"    varchar(6),
    "ENT_CCN"    varchar(4),          -- IDCC
    "ENT_CCN_LIB" varchar(200),
    "ENT_EFF"    integer,
    "ENT_TYPE"   integer,
    "ENT_SPEC"   integer,
    "ENT_PUBLIC" char(1) DEFAULT 'N', -- O/N
    "ADR_ID"     integer REFERENCES "T_ADRESSE"("ADR_ID"),
    "ENT_TEL"    varchar(20),
    "ENT_MAIL"   varchar(120),
    "ENT_MAJ"    timestamp NOT NULL DEFAULT now()
);

CREATE TABLE "T_STAGIAIRE" (
    "STG_ID"      integer PRIMARY KEY,
    "STG_NOM"     varchar(80) NOT NULL,
    "STG_NOM_USAGE" varchar(80),
    "STG_PRENOM"  varchar(80) NOT NULL,
    "STG_CIVILITE" varchar(4),        -- 'M.' or 'Mme'
    "STG_DNAIS"   varchar(10),        -- DD/MM/YYYY
    "STG_LIEU_NAIS" varchar(80),
    "STG_DEP_NAIS" varchar(3),
    "STG_NSS"     varchar(15),
    "STG_NATIO"   integer,
    "STG_REGIME"  integer,
    "ADR_ID"      integer REFERENCES "T_ADRESSE"("ADR_ID"),
    "STG_TEL"     varchar(20),
    "STG_MAIL"    varchar(120),
    "STG_RQTH"    char(1) DEFAULT 'N',
    "STG_SHN"     char(1) DEFAULT 'N',
    "STG_CREA"    char(1) DEFAULT 'N',
    "STG_SITU"    integer,
    "STG_DIPL"    integer,
    "STG_RESP_LEGAL" varchar(160),    -- "NOM Prénom"
    "STG_MAJ"     timestamp NOT NULL DEFAULT now()
);

CREATE TABLE "T_TUTEUR" (
    "TUT_ID"   integer PRIMARY KEY,
    "ENT_ID"   integer REFERENCES "T_ENTREPRISE"("ENT_ID"),
    "TUT_NOM"  varchar(80), "TUT_PRENOM" varchar(80),
    "TUT_DNAIS" varchar(10),
    "TUT_FONCTION" varchar(120),
    "TUT_DIPLOME" varchar(120)
);

CREATE TABLE "T_ACTION" (                 -- training action = session
    "ACT_ID"    integer PRIMARY KEY,
    "SITE_ID"   integer REFERENCES "T_SITE"("SITE_ID"),
    "ACT_RNCP"  varchar(12),
    "ACT_CFD"   varchar(8),
    "ACT_LIB"   varchar(200),
    "ACT_DEBUT" varchar(10),
    "ACT_FIN"   varchar(10),
    "ACT_HEURES" integer,
    "ACT_MAJ"   timestamp NOT NULL DEFAULT now()
);

CREATE TABLE "T_CONTRAT" (                -- contracts and amendments (CTR_NATURE 'C' / 'A')
    "CTR_ID"     integer PRIMARY KEY,
    "CTR_REF"    varchar(30) NOT NULL UNIQUE,  -- numeroInterne
    "CTR_NATURE" char(1) NOT NULL DEFAULT 'C',
    "CTR_PARENT_ID" integer REFERENCES "T_CONTRAT"("CTR_ID"),
    "CTR_TYPE"   integer NOT NULL,
    "CTR_DEROG"  integer,
    "CTR_NUM_PREC" varchar(15),
    "STG_ID"     integer REFERENCES "T_STAGIAIRE"("STG_ID"),
    "ENT_ID"     integer REFERENCES "T_ENTREPRISE"("ENT_ID"),
    "ACT_ID"     integer REFERENCES "T_ACTION"("ACT_ID"),
    "TUT1_ID"    integer REFERENCES "T_TUTEUR"("TUT_ID"),
    "TUT2_ID"    integer REFERENCES "T_TUTEUR"("TUT_ID"),
    "CTR_DSIGN"  varchar(10),
    "CTR_DDEB"   varchar(10),
    "CTR_DFIN"   varchar(10),
    "CTR_DEFFET" varchar(10),
    "CTR_HEBDO"  numeric(4,2),            -- hours, decimal (35.50 = 35 h 30)
    "CTR_SALAIRE" numeric(9,2),
    "CTR_SMC"    numeric(9,2),
    "CTR_TAUX_A1" numeric(5,2), "CTR_TAUX_A2" numeric(5,2),
    "CTR_TAUX_A3" numeric(5,2), "CTR_TAUX_A4" numeric(5,2),
    "CTR_BASE"   varchar(4) DEFAULT 'SMIC',
    "CTR_RETRAITE" varchar(60),
    "CTR_DECA"   varchar(15),
    "CTR_ETAT_OPCO" varchar(30),
    "CTR_ANNULE" char(1) DEFAULT 'N',
    "CTR_MAJ"    timestamp NOT NULL DEFAULT now()
);

CREATE TABLE "T_DOCUMENT" (
    "DOC_ID"   integer PRIMARY KEY,
    "CTR_ID"   integer REFERENCES "T_CONTRAT"("CTR_ID"),
    "DOC_TYPE" varchar(30),
    "DOC_FICHIER" varchar(255),           -- path on the file server
    "DOC_DATE" timestamp NOT NULL DEFAULT now()
);

CREATE TABLE "T_ECHEANCIER" (
    "ECH_ID"   integer PRIMARY KEY,
    "CTR_ID"   integer REFERENCES "T_CONTRAT"("CTR_ID"),
    "ECH_NUM"  integer,
    "ECH_DATE" varchar(10),
    "ECH_MONTANT" numeric(10,2),
    "ECH_STATUT" varchar(12) DEFAULT 'A FACTURER'
);
