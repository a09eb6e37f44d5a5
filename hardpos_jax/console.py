"""What a person at the console sees: `say` lines, warnings and errors.

The libraries' INFO chatter goes to a log file (`log_to`), so a run's
console is its own lines, its step lines and its tables.
"""

import logging as std_logging
import os
import sys

from absl import flags
from absl import logging
import jax

# The full absl log (libraries' INFO included), under the run's directory.
LOG_DIR = "logs"
# Source trees whose warnings a person at the console should see.
_OWN_CODE = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 name) + os.sep
    for name in ("hardpos_jax", "tfds_builders", "configs"))


def say(message: str, lead_only: bool = False) -> None:
  """A line for the person at the console, also in the absl log.

  Args:
    message: the line.
    lead_only: print it on process 0 only (every process logs it).
  """
  if not lead_only or jax.process_index() == 0:
    print(message, flush=True)
  logging.info("%s", message)


def _console_worthy(record: std_logging.LogRecord) -> bool:
  """Errors from anywhere; warnings from this project's own code."""
  return record.levelno >= std_logging.ERROR or (
      record.levelno >= std_logging.WARNING
      and record.pathname.startswith(_OWN_CODE))


def log_to(directory: str, program: str) -> str:
  """Sends the absl log to <directory>/logs; the console keeps what matters.

  orbax, TFDS and JAX log hundreds of INFO (and deprecation WARNING) lines
  per run. They go to `<program>.INFO` in the returned directory with every
  other record; stderr shows errors and this project's warnings, stdout the
  `say` lines, step lines and tables. absl's `--logtostderr` or
  `--alsologtostderr` keep everything on stderr.

  Args:
    directory: the run's directory (a workdir, an output folder).
    program: names the log file.

  Returns:
    The log directory.
  """
  log_dir = os.path.join(directory, LOG_DIR)
  if flags.FLAGS.logtostderr or flags.FLAGS.alsologtostderr:
    return log_dir
  os.makedirs(log_dir, exist_ok=True)
  logging.get_absl_handler().use_absl_log_file(program, log_dir)
  console = std_logging.StreamHandler(sys.stderr)
  console.setFormatter(logging.PythonFormatter())
  console.addFilter(_console_worthy)
  std_logging.getLogger().addHandler(console)
  return log_dir
