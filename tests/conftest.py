"""Two host devices for multi-device tests; absl flags parsed for grain; a compile cache."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()

import jax  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
jax.config.update(
  "jax_compilation_cache_dir", str(pathlib.Path("~/.cache/fer_jax/jax_cache").expanduser())
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
