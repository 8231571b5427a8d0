"""Judging scores: per-finding metrics, thresholds, patient-bootstrap intervals, figures."""
