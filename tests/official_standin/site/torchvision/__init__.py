"""A tiny torchvision for the smoke run, where none is installed (see ../../README.md)."""

from torchvision import models  # noqa: F401
