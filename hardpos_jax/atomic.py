"""Writes that readers never see half done: a temp sibling, then a rename."""

from collections.abc import Callable
import os


def write_atomically(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp)` for a temp sibling of `path`, then renames it.

  `os.replace` is atomic on POSIX, so `path` holds either its old content or
  all of the new; a failed `write` leaves no temp file behind.

  Args:
    path: the file to write.
    write: writes the whole file at the path it is given.
  """
  tmp = f"{path}.tmp"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""

  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)

  write_atomically(path, write)
