"""Metrics and runners shared by every engine."""
