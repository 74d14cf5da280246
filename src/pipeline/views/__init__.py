"""Views of results: ASCII and HTML tables, genotype pictures, plots."""
