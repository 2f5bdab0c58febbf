"""Stand-in for EAC's src/resnet.py (see ../../README.md): only its path is checked."""
