-- Ypso Formation's training agreements (conventions de formation): one row per contract,
-- dates as typed text like the rest of this product.
CREATE TABLE "T_CONVENTION" (
    "CTR_ID"        integer PRIMARY KEY REFERENCES "T_CONTRAT"("CTR_ID") ON DELETE CASCADE,
    "CNV_COUT_PEDA" numeric(10,2),
    "CNV_MT_A1"     numeric(10,2), "CNV_MT_A2" numeric(10,2),
    "CNV_MT_A3"     numeric(10,2), "CNV_MT_A4" numeric(10,2),
    "CNV_EQUIP"     numeric(10,2),
    "CNV_REPAS"     numeric(10,2),
    "CNV_HEBERG"    numeric(10,2),
    "CNV_DDEB"      varchar(10),
    "CNV_DFIN"      varchar(10),
    "CNV_MAJ"       timestamp NOT NULL DEFAULT now()
);
