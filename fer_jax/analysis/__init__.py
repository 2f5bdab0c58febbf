"""Scoring a trained model: accuracy, confusion and calibration on a split (evaluation.py), and
how likely each training label is wrong (label_audit.py)."""
