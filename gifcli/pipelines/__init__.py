"""Compositions of math, models, data and io; no printing."""
