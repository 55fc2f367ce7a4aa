"""Data files shipped with the package (the model catalog)."""
