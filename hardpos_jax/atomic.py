"""Writes that readers never see half done: a temp sibling, then a rename."""

from collections.abc import Callable
import os
import shutil
import tempfile


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


def write_dir(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp)` for a temp sibling directory, then renames it.

  A directory cannot replace another in one rename, so an old `path` is
  removed just before the rename; a failed `write` leaves `path` as it was
  and no temp directory behind.

  Args:
    path: the directory to write; its parents are made if need be.
    write: fills the (empty, existing) directory it is given.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
  try:
    write(tmp)
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
