"""Benchmarks: ``python -m bench.<name> [--n N]``; ``make bench`` runs them all.

Each prints a readable table and, as its last line, one JSON object with its figures.
Helper modules start with an underscore so ``make bench`` does not run them.
"""
