"""Labels: the MeSH → CheXpert table and the CheXpert-style report labeler."""
