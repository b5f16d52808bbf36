"""Evaluation: benchmark registry, answer normalisation, scoring, and answer generation."""
