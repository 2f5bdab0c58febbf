"""Stand-in for NCCTFER's algorithm/loss.py (see ../../README.md): only its path is checked."""
