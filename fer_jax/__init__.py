"""fer_jax: facial expression recognition that learns through noisy labels, in JAX/Flax."""

__version__ = "0.1.0"
