"""Evaluation: OPE metrics, dataset readers and synthetic sequences."""
