"""Evaluation: metrics, feature extractors and reports."""
