"""Datasets (`fer_jax.data.<name>` modules), augmentation ops and the grain pipeline."""
