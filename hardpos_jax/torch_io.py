"""Reading and writing PyTorch weight files without ever running a pickle.

* `.safetensors`: read and written with `safetensors.numpy` (no torch).
* `.pt` / `.pth` / `.bin` written by `torch.save`: `torch.load(...,
  weights_only=True)`, which refuses anything but tensors and containers.
* TorchScript archives (OpenAI's original `ViT-B-32.pt`): `weights_only`
  refuses them and `torch.jit.load` would run their code, so their tensors are
  read by `read_torchscript`, a restricted unpickler that knows only tensor
  storages, `OrderedDict` and inert stand-ins for the scripted modules.
"""

import collections
import functools
import io
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import safetensors.numpy

from hardpos_jax import atomic

# Storage classes a TorchScript archive names, and their element types.
_STORAGE_DTYPES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

# Keys that hold metadata or constant masks, not weights.
_NON_WEIGHT_SUFFIXES = ("input_resolution", "context_length", "vocab_size",
                        "attn_mask", "position_ids")


class _ScriptObject:
  """Inert stand-in for a scripted module: keeps its state, runs nothing."""

  def __setstate__(self, state):
    self.state = state


class _Storage:

  def __init__(self, dtype):
    self.dtype = dtype


def _build_list(values):
  return list(values)


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a TorchScript `data.pkl`; any unknown global is an error."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
    super().__init__(io.BytesIO(data))
    self._archive = archive
    self._prefix = prefix

  def find_class(self, module, name):
    if module.startswith("__torch__"):
      return type(name, (_ScriptObject,), {})
    if module == "torch" and name in _STORAGE_DTYPES:
      return _Storage(_STORAGE_DTYPES[name])
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch.jit._pickle" and name.startswith("build_"):
      return _build_list
    raise pickle.UnpicklingError(
        f"Refusing to load {module}.{name} from a TorchScript archive: only "
        "tensors and module state are read."
    )

  def persistent_load(self, pid):
    kind, storage, key, _, numel = pid
    if kind != "storage":
      raise pickle.UnpicklingError(f"Unknown persistent id {pid!r}")
    raw = self._archive.read(f"{self._prefix}data/{key}")
    return np.frombuffer(raw, dtype=storage.dtype, count=numel)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused  # requires_grad, backward hooks, metadata: irrelevant for weights
  # as_strided does not check bounds: a crafted view would read past storage.
  last = offset + sum((n - 1) * s for n, s in zip(size, stride) if n)
  if offset < 0 or min(stride, default=0) < 0 or (
      0 not in size and last >= len(storage)):
    raise pickle.UnpicklingError(
        f"Refusing a tensor view (offset {offset}, size {tuple(size)}, stride "
        f"{tuple(stride)}) outside its storage of {len(storage)} elements")
  item = storage.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=[s * item for s in stride]
  ).copy()


def _flatten_module(obj, prefix: str, out: dict[str, np.ndarray]):
  for key, value in obj.state.items():
    if isinstance(value, np.ndarray):
      out[prefix + key] = value
    elif isinstance(value, _ScriptObject):
      _flatten_module(value, f"{prefix}{key}.", out)


def is_torchscript(path: str) -> bool:
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(n.endswith("/constants.pkl") for n in archive.namelist())


def read_torchscript(path: str) -> dict[str, np.ndarray]:
  """Tensors of a TorchScript archive, named like `module.state_dict()`."""
  with zipfile.ZipFile(path) as archive:
    (data_pkl,) = [n for n in archive.namelist() if n.endswith("/data.pkl")
                   and n.count("/") == 1]
    prefix = data_pkl[: -len("data.pkl")]
    try:
      root = _RestrictedUnpickler(archive.read(data_pkl), archive,
                                  prefix).load()
    except pickle.UnpicklingError as e:
      raise pickle.UnpicklingError(f"{path}: {e}") from e
  out = {}
  _flatten_module(root, "", out)
  return out


def _torch_load(path: str) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=g-import-not-at-top

  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise ValueError(
        f"{path}: not a plain tensor checkpoint; refusing to unpickle it "
        f"(weights_only=True): {e}"
    ) from e
  if isinstance(state, dict) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state dict, got {type(state)}")
  return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
          for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch/safetensors weights file into numpy arrays.

  Strips DDP's `module.` prefix and drops metadata / constant-mask entries.

  Args:
    path: a `.safetensors`, `.pt`, `.pth` or `.bin` file (TorchScript too).

  Returns:
    {key: array} with the file's own key names and dtypes.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No weights file at {path}")
  try:
    if path.endswith(".safetensors"):
      state = safetensors.numpy.load_file(path)
    elif is_torchscript(path):
      state = read_torchscript(path)
    else:
      state = _torch_load(path)
  # A cut .pt zip makes torch raise OSError (EINVAL) or RuntimeError.
  except (safetensors.SafetensorError, zipfile.BadZipFile, EOFError,
          RuntimeError, OSError) as e:
    raise ValueError(f"{path}: unreadable or truncated weights file: {e}"
                     ) from e
  state = {k.removeprefix("module."): v for k, v in state.items()}
  return {k: v for k, v in state.items()
          if not k.endswith(_NON_WEIGHT_SUFFIXES)}


def write_state_dict(state: dict[str, np.ndarray], path: str) -> None:
  """Writes `.safetensors` (no torch needed) or `.pt`/`.pth`/`.bin`.

  Writes to a temporary name and renames, so a failure leaves nothing behind.
  """
  state = {k: np.asarray(v, order="C") for k, v in state.items()}
  if path.endswith(".safetensors"):
    write = functools.partial(safetensors.numpy.save_file, state)
  elif path.endswith((".pt", ".pth", ".bin")):
    import torch  # pylint: disable=g-import-not-at-top

    write = functools.partial(
        torch.save, {k: torch.tensor(v) for k, v in state.items()})
  else:
    raise ValueError(f"{path}: unknown weights format; use .safetensors, "
                     ".pt, .pth or .bin")
  atomic.write_atomically(path, write)
