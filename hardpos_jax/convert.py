"""PyTorch (OpenAI / open_clip / HF) <-> Flax CLIP weights.

OpenAI's state-dict layout (`visual.conv1.weight`, `visual.transformer.
resblocks.N.attn.in_proj_weight`, `token_embedding.weight`, `text_projection`,
`logit_scale`, ...; open_clip uses the same names) is the interchange format:
one table, `_rules`, maps it to and from the Flax params of models/clip.py in
both directions. HF `CLIPModel` directories are renamed to it and from it by
hf_format.py; `read_pytorch`, `write_hf` and `write_open_clip` here are the
entry points for every PyTorch format.

The command line is `python -m hardpos_jax.export` (export.py): it reads
through `hardpos_jax.load`, whose api.py imports this module.
"""

import os
from typing import Any, Callable, Iterator, Mapping

import flax.traverse_util
import jax
import numpy as np

from hardpos_jax import hf_format
from hardpos_jax import torch_io
from hardpos_jax.models import clip

# OpenAI and open_clip towers use 64-wide attention heads; the state dict does
# not record the head count, so it is inferred from the width.
OPENAI_HEAD_WIDTH = 64
_QKV = ("query", "key", "value")


def _in_proj_weight_to_flax(x, heads):
  return {(n, "kernel"): w.T.reshape(w.shape[1], heads, -1)
          for n, w in zip(_QKV, np.split(x, 3))}


def _in_proj_weight_to_torch(get, heads):
  del heads
  kernels = [get((n, "kernel")) for n in _QKV]
  return np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels])


# kind -> (to_flax(tensor, heads) -> {sub_path: array},
#          to_torch(get(sub_path) -> array, heads) -> tensor)
_KINDS: dict[str, tuple[Callable, Callable]] = {
    "copy": (lambda x, h: {(): x}, lambda get, h: get(())),
    # torch Linear weight is [out, in]; flax Dense kernel is [in, out].
    "linear": (lambda x, h: {(): x.T}, lambda get, h: get(()).T),
    # torch Conv2d weight is [out, in, kh, kw]; flax Conv is [kh, kw, in, out].
    "conv": (lambda x, h: {(): x.transpose(2, 3, 1, 0)},
             lambda get, h: get(()).transpose(3, 2, 0, 1)),
    "in_proj_weight": (_in_proj_weight_to_flax, _in_proj_weight_to_torch),
    "in_proj_bias": (
        lambda x, h: {(n, "bias"): b.reshape(h, -1)
                      for n, b in zip(_QKV, np.split(x, 3))},
        lambda get, h: np.concatenate([get((n, "bias")).ravel()
                                       for n in _QKV]),
    ),
    "out_proj_weight": (
        lambda x, h: {(): x.T.reshape(h, -1, x.shape[0])},
        lambda get, h: get(()).reshape(-1, get(()).shape[-1]).T,
    ),
}


def _ln_rules(torch_name, flax_path):
  yield f"{torch_name}.weight", (*flax_path, "scale"), "copy"
  yield f"{torch_name}.bias", (*flax_path, "bias"), "copy"


def _dense_rules(torch_name, flax_path):
  yield f"{torch_name}.weight", (*flax_path, "kernel"), "linear"
  yield f"{torch_name}.bias", (*flax_path, "bias"), "copy"


def _encoder_rules(torch_prefix, flax_tower, depth):
  for i in range(depth):
    t = f"{torch_prefix}transformer.resblocks.{i}."
    f = (flax_tower, "encoder", f"block_{i}")
    yield f"{t}attn.in_proj_weight", (*f, "attn"), "in_proj_weight"
    yield f"{t}attn.in_proj_bias", (*f, "attn"), "in_proj_bias"
    yield f"{t}attn.out_proj.weight", (*f, "attn", "out", "kernel"), (
        "out_proj_weight")
    yield f"{t}attn.out_proj.bias", (*f, "attn", "out", "bias"), "copy"
    yield from _ln_rules(f"{t}ln_1", (*f, "ln_1"))
    yield from _ln_rules(f"{t}ln_2", (*f, "ln_2"))
    yield from _dense_rules(f"{t}mlp.c_fc", (*f, "mlp", "fc"))
    yield from _dense_rules(f"{t}mlp.c_proj", (*f, "mlp", "proj"))


def _rules(config: Mapping[str, Any]) -> Iterator[tuple[str, tuple, str]]:
  """(OpenAI key, Flax param path, kind) for every weight of `config`."""
  hf_format.check_openai_style(config)
  yield "visual.conv1.weight", ("img", "embedding", "kernel"), "conv"
  yield "visual.class_embedding", ("img", "cls"), "copy"
  yield "visual.positional_embedding", ("img", "pos_embedding"), "copy"
  yield from _ln_rules("visual.ln_pre", ("img", "ln_pre"))
  yield from _encoder_rules("visual.", "img", config["image"]["depth"])
  yield from _ln_rules("visual.ln_post", ("img", "ln_post"))
  # OpenAI's projections are bare [W, E] matrices applied as x @ proj.
  yield "visual.proj", ("img", "head", "kernel"), "copy"
  yield "token_embedding.weight", ("txt", "embedding", "embedding"), "copy"
  yield "positional_embedding", ("txt", "pos_embedding"), "copy"
  yield from _encoder_rules("", "txt", config["text"]["depth"])
  yield from _ln_rules("ln_final", ("txt", "ln_final"))
  yield "text_projection", ("txt", "head", "kernel"), "copy"
  yield "logit_scale", ("t",), "copy"


def _heads(config, path):
  return config["image" if path[0] == "img" else "text"]["num_heads"]


def param_shapes(config: Mapping[str, Any]) -> dict[tuple, tuple]:
  """Flat {path: shape} of `CLIP(**config)`'s params, without allocating."""
  shapes = jax.eval_shape(lambda: clip.init_params(config, jax.random.key(0)))
  flat = flax.traverse_util.flatten_dict(shapes)
  return {k: v.shape for k, v in flat.items()}


def openai_to_flax(
    state: Mapping[str, np.ndarray], config: Mapping[str, Any]
) -> dict:
  """OpenAI-key state dict -> float32 Flax params of `CLIP(**config)`.

  Raises:
    KeyError: a weight the model needs is missing (names the key).
    ValueError: a shape disagrees (names the key and both shapes), or the
      state dict has weights the model has no place for (names them).
  """
  expected = param_shapes(config)
  flat = {}
  used = set()
  for key, path, kind in _rules(config):
    if key not in state:
      raise KeyError(f"Checkpoint lacks {key!r} (needed for {'/'.join(path)})")
    used.add(key)
    tensor = np.asarray(state[key], np.float32)
    try:
      parts = _KINDS[kind][0](tensor, _heads(config, path))
    except ValueError as e:
      raise ValueError(f"{key!r} has shape {tensor.shape}, which does not fit "
                       f"the model at {'/'.join(path)}: {e}") from e
    for sub, value in parts.items():
      full = (*path, *sub)
      if value.shape != expected[full]:
        raise ValueError(
            f"{key!r} has shape {tensor.shape} in the checkpoint; as "
            f"{'/'.join(full)} that is {value.shape} but the model expects "
            f"{expected[full]}"
        )
      flat[full] = value
  unused = sorted(set(state) - used)
  if unused:
    raise ValueError(f"Checkpoint has weights this model has no place for: "
                     f"{unused[:8]}{' ...' if len(unused) > 8 else ''}")
  return flax.traverse_util.unflatten_dict(flat)


def flax_to_openai(params: Mapping, config: Mapping[str, Any]) -> dict:
  """Flax params of `CLIP(**config)` -> OpenAI-key float32 state dict."""
  flat = {k: np.asarray(v, np.float32)
          for k, v in flax.traverse_util.flatten_dict(params).items()}
  state = {}
  for key, path, kind in _rules(config):
    get = lambda sub, path=path: flat[(*path, *sub)]
    state[key] = np.asarray(_KINDS[kind][1](get, _heads(config, path)),
                            order="C")
  return state


def _count_blocks(state, prefix):
  n = 0
  while f"{prefix}transformer.resblocks.{n}.attn.in_proj_weight" in state:
    n += 1
  return n


def config_from_openai(
    state: Mapping[str, np.ndarray], *, quick_gelu: bool = True
) -> dict:
  """Infers the model config of an OpenAI/open_clip-key state dict.

  Args:
    state: OpenAI-key state dict.
    quick_gelu: OpenAI's models were trained with QuickGELU; open_clip models
      without `-quickgelu` in their name use GELU. Loading an OpenAI model
      with GELU is the well-known silent accuracy loss, hence the default.
  """
  for key in ("visual.conv1.weight", "token_embedding.weight"):
    if key not in state:
      raise KeyError(f"Not an OpenAI/open_clip ViT CLIP state dict: no {key!r}")
  act = "quick_gelu" if quick_gelu else "gelu"
  conv = state["visual.conv1.weight"]
  width, patch = conv.shape[0], conv.shape[-1]
  grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** .5))
  text_width = state["ln_final.weight"].shape[0]
  return clip.model_config(
      None,
      image=dict(
          width=width, depth=_count_blocks(state, "visual."),
          num_heads=width // OPENAI_HEAD_WIDTH, patch_size=patch, act=act,
          mlp_dim=state["visual.transformer.resblocks.0.mlp.c_fc.weight"]
          .shape[0],
      ),
      text=dict(
          width=text_width, depth=_count_blocks(state, ""),
          num_heads=text_width // OPENAI_HEAD_WIDTH, act=act,
          mlp_dim=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
          vocab_size=state["token_embedding.weight"].shape[0],
          context_length=state["positional_embedding"].shape[0],
      ),
      embed_dim=state["visual.proj"].shape[1],
      image_size=grid * patch,
  )


def read_pytorch(path: str, *, quick_gelu: bool = True) -> tuple[dict, dict]:
  """Reads a PyTorch CLIP into (model config, Flax params).

  Args:
    path: an OpenAI/open_clip weights file, or a HF `CLIPModel` directory.
    quick_gelu: for OpenAI-key files only (HF configs name their activation).
  """
  try:
    if os.path.isdir(path):
      config, state = hf_format.read_dir(path)
    else:
      state = torch_io.read_state_dict(path)
      config = config_from_openai(state, quick_gelu=quick_gelu)
    return config, openai_to_flax(state, config)
  except (KeyError, ValueError) as e:
    raise type(e)(f"{path}: {e.args[0]}") from e


def write_hf(path: str, config: Mapping, params: Mapping, tokenizer=None):
  """Writes a HF `CLIPModel` directory (see `hf_format.write_dir`).

  With a tokenizer, also its vocab.json/merges.txt and the tokenizer and
  image-processor configs, so `CLIPProcessor.from_pretrained` works too.
  """
  hf_format.write_dir(path, config, flax_to_openai(params, config), tokenizer)


def write_open_clip(path: str, config: Mapping, params: Mapping) -> None:
  """Writes an OpenAI/open_clip-key state dict (.safetensors, .pt, .bin)."""
  hf_format.check_openai_style(config)
  for tower in ("image", "text"):
    width, heads = config[tower]["width"], config[tower]["num_heads"]
    if width != heads * OPENAI_HEAD_WIDTH:
      raise ValueError(
          f"The OpenAI/open_clip layout implies {OPENAI_HEAD_WIDTH}-wide "
          f"heads, but the {tower} tower has {heads} heads of width "
          f"{width // heads}: it would load back wrongly; export as 'hf', "
          "which records the head count")
  torch_io.write_state_dict(flax_to_openai(params, config), path)
