"""The benchmarks' class orders and `canonical`, for the dataset modules: they live in
fer_jax/expressions.py, which model files and label noise read without the data package."""

from fer_jax.expressions import AFFECTNET, FERPLUS, RAF_DB, canonical  # noqa: F401
