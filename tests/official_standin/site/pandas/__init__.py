"""An empty pandas for the smoke run, where none is installed (see ../../README.md): the
stand-in datasets never use it, benchmark_torch.py only checks that it imports."""
