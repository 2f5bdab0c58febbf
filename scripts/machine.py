"""What the benchmark scripts record about the machine they ran on."""

import pathlib
import platform


def cpu_name():
  """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module says."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.partition(":")[2].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
