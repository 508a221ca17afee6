"""Sources of SHARP-like CEA records (each fills ``raw/<source>/`` with FITS files and a manifest)."""
