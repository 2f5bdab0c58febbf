"""Stand-in for NCCTFER's model/cnn.py (see ../../README.md): only its path is checked."""
