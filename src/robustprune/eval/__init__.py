"""Evaluation of what pruning does: datasets, clean accuracy, attacks, distribution shifts, analysis."""
