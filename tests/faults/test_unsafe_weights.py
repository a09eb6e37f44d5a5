"""Case 14 of issue 8: weights files that try to run code, or are cut short.

Each payload would create a marker file if it ran. `hardpos_jax.load` must
refuse the file with a message naming it, never create the marker, call
`torch.load` only with `weights_only=True`, never call `torch.jit.load`, and
leave every other file alone.
"""

import collections
import hashlib
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import hardpos_jax
from hardpos_jax import torch_io


class Payload:
  """Unpickling this runs `touch marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def torch_calls(monkeypatch):
  """Records torch.load's weights_only; fails on any torch.jit.load."""
  calls = []
  load = torch.load

  def recording_load(*args, **kwargs):
    calls.append(kwargs.get("weights_only"))
    return load(*args, **kwargs)

  def jit_load(*args, **kwargs):
    raise AssertionError(f"torch.jit.load{args} would run TorchScript code")

  monkeypatch.setattr(torch, "load", recording_load)
  monkeypatch.setattr(torch.jit, "load", jit_load)
  return calls


def _digest(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def good_file(tmp_path):
  """A good weights file next to the bad ones; (path, digest)."""
  path = str(tmp_path / "good.safetensors")
  torch_io.write_state_dict({"w": np.arange(64, dtype=np.float32)}, path)
  return path, _digest(path)


def _pickle_pt(path, marker):
  torch.save({"w": torch.zeros(2), "x": Payload(marker)}, path)


def _legacy_pickle_pt(path, marker):
  with open(path, "wb") as f:
    pickle.dump({"x": Payload(marker)}, f)


def _torchscript_pt(path, marker):
  """An archive shaped like torch.jit.save's, with the payload in data.pkl."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("model/data.pkl", pickle.dumps({"x": Payload(marker)}))
    z.writestr("model/constants.pkl", pickle.dumps(Payload(marker)))
    z.writestr("model/code/__torch__.py", f"import os; os.system('touch "
               f"{marker}')\n")
    z.writestr("model/version", "3\n")


class _StorageRef:
  """Pickled as the persistent id of a 4-float storage (`data/0`)."""


class _HugeView:
  """A tensor view of 10^6 floats over that 4-float storage."""

  def __reduce__(self):
    return (torch._utils._rebuild_tensor_v2,  # pylint: disable=protected-access
            (_StorageRef(), 0, (1000, 1000), (1000, 1), False,
             collections.OrderedDict()))


class _ArchivePickler(pickle.Pickler):

  def persistent_id(self, obj):
    if isinstance(obj, _StorageRef):
      return ("storage", torch.FloatStorage, "0", "cpu", 4)
    return None


def _torchscript_out_of_bounds(path, marker):
  """Reading this view would copy memory past the storage (or crash)."""
  del marker
  data = io.BytesIO()
  _ArchivePickler(data, protocol=2).dump({"w": _HugeView()})
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("model/data.pkl", data.getvalue())
    z.writestr("model/data/0", np.zeros(4, np.float32).tobytes())
    z.writestr("model/constants.pkl", pickle.dumps(()))


@pytest.mark.parametrize("write, needle", [
    (_pickle_pt, "refusing to unpickle"),
    (_legacy_pickle_pt, "refusing to unpickle"),
    (_torchscript_pt, "Refusing to load posix.system"),
    (_torchscript_out_of_bounds, "outside its storage"),
], ids=["torch_save_pickle", "plain_pickle", "torchscript_payload",
        "torchscript_view_out_of_bounds"])
def test_payload_is_refused(tmp_path, torch_calls, good_file, write, needle):
  marker = tmp_path / "marker"
  path = str(tmp_path / "model.pt")
  write(path, marker)
  with pytest.raises((ValueError, pickle.UnpicklingError)) as e:
    hardpos_jax.load(path)
  assert needle in str(e.value) and path in str(e.value)
  assert not marker.exists()
  assert all(torch_calls), f"torch.load weights_only={torch_calls}"
  assert _digest(good_file[0]) == good_file[1]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_download_is_refused(tmp_path, torch_calls, good_file,
                                       suffix):
  path = str(tmp_path / f"download{suffix}")
  torch_io.write_state_dict({"w": np.ones((128, 128), np.float32)}, path)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match="unreadable or truncated") as e:
    hardpos_jax.load(path)
  assert path in str(e.value)
  assert all(torch_calls), f"torch.load weights_only={torch_calls}"
  assert _digest(good_file[0]) == good_file[1]


def test_failed_write_keeps_the_previous_file(good_file):
  path, digest = good_file
  with pytest.raises(Exception):
    torch_io.write_state_dict({"w": np.array([object()])}, path)
  assert _digest(path) == digest
  assert not os.path.exists(path + ".tmp")
