"""PyTorch (OpenAI / open_clip / HF) <-> Flax CLIP weights.

OpenAI's state-dict layout (`visual.conv1.weight`, `visual.transformer.
resblocks.N.attn.in_proj_weight`, `token_embedding.weight`, `text_projection`,
`logit_scale`, ...; open_clip uses the same names) is the interchange format:
HF `CLIPModel` weights are renamed to it and from it, and one table, `_rules`,
maps it to and from the Flax params of models/clip.py in both directions.

The command line is `python -m hardpos_jax.export` (export.py): it reads
through `hardpos_jax.load`, whose api.py imports this module.
"""

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping

import flax.traverse_util
import jax
import numpy as np

from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax import torch_io
from hardpos_jax.data import eval_transform
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


def _check_openai_style(config: Mapping[str, Any]) -> None:
  """OpenAI's layout has no slot for big_vision-style structural options."""
  want = {"image": dict(pool="cls", patch_bias=False, ln_pre=True,
                        head_bias=False),
          "text": dict(pool="eot", causal=True, head_bias=False)}
  for tower, options in want.items():
    for key, value in options.items():
      if config[tower][key] != value:
        raise ValueError(
            f"Only OpenAI-style towers map to PyTorch CLIP weights: "
            f"{tower}.{key} is {config[tower][key]!r}, OpenAI's is {value!r}"
        )


def _rules(config: Mapping[str, Any]) -> Iterator[tuple[str, tuple, str]]:
  """(OpenAI key, Flax param path, kind) for every weight of `config`."""
  _check_openai_style(config)
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
  return {k: v.shape for k, v in flax.traverse_util.flatten_dict(shapes).items()}


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


# HF CLIPModel <-> OpenAI key names: prefixes (first match wins), then the
# names inside a block.
_HF_PREFIXES = (
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
    ("vision_model.embeddings.position_embedding.weight",
     "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight",
     "positional_embedding"),
    ("text_model.final_layer_norm.", "ln_final."),
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("logit_scale", "logit_scale"),
)
_HF_INNER = ((".self_attn.out_proj.", ".attn.out_proj."),
             (".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."),
             (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."))
# HF keeps projections as Linear weights [E, W]; OpenAI as [W, E] matrices.
_HF_PROJECTIONS = (("visual_projection.weight", "visual.proj"),
                   ("text_projection.weight", "text_projection"))
_HF_QKV = ("q_proj", "k_proj", "v_proj")


def _rename(key, prefixes, inner):
  for src, dst in prefixes:
    if key.startswith(src):
      key = dst + key[len(src):]
      for a, b in inner:
        key = key.replace(a, b)
      return key
  raise KeyError(f"Unknown CLIP weight {key!r}")


def hf_to_openai(state: Mapping[str, np.ndarray]) -> dict:
  """HF `CLIPModel` state dict -> OpenAI-key state dict."""
  out = {}
  for hf, oai in _HF_PROJECTIONS:
    if hf in state:
      out[oai] = state[hf].T
  for key, value in state.items():
    if key in dict(_HF_PROJECTIONS):
      continue
    if ".self_attn." in key and key.split(".")[-2] in _HF_QKV:
      if key.split(".")[-2] != "q_proj":
        continue  # gathered with q_proj below
      kind = key.split(".")[-1]
      base = key[: -len(f"q_proj.{kind}")]
      parts = [state[f"{base}{p}.{kind}"] for p in _HF_QKV]
      oai = _rename(base, _HF_PREFIXES, _HF_INNER).replace(
          ".self_attn.", ".attn.")
      out[f"{oai}in_proj_{kind}"] = np.concatenate(parts)
      continue
    out[_rename(key, _HF_PREFIXES, _HF_INNER)] = value
  return out


def openai_to_hf(state: Mapping[str, np.ndarray]) -> dict:
  """OpenAI-key state dict -> HF `CLIPModel` state dict."""
  prefixes = [(b, a) for a, b in _HF_PREFIXES]
  # Longest first, so `visual.transformer.` wins over `transformer.`.
  prefixes.sort(key=lambda p: -len(p[0]))
  inner = [(b, a) for a, b in _HF_INNER]
  out = {}
  for key, value in state.items():
    if key in dict((b, a) for a, b in _HF_PROJECTIONS):
      hf = dict((b, a) for a, b in _HF_PROJECTIONS)[key]
      out[hf] = np.asarray(value.T, order="C")
    elif ".attn.in_proj_" in key:
      base, kind = key.split(".attn.in_proj_")
      hf = _rename(base + ".", prefixes, inner) + "self_attn."
      for p, part in zip(_HF_QKV, np.split(value, 3)):
        out[f"{hf}{p}.{kind}"] = part
    else:
      out[_rename(key, prefixes, inner)] = value
  return out


def config_from_hf(hf: Mapping[str, Any]) -> dict:
  """HF `CLIPConfig` dict (config.json) -> model config."""
  if hf.get("model_type") != "clip":
    raise ValueError(f"Not a CLIPModel config: model_type is "
                     f"{hf.get('model_type')!r}")
  v, t = hf["vision_config"], hf["text_config"]
  for tower in (v, t):
    if tower.get("layer_norm_eps", 1e-5) != 1e-5:
      raise ValueError(f"layer_norm_eps {tower['layer_norm_eps']} differs "
                       "from CLIP's 1e-5, which this model uses")
  return clip.model_config(
      None,
      image=dict(width=v["hidden_size"], depth=v["num_hidden_layers"],
                 num_heads=v["num_attention_heads"],
                 mlp_dim=v["intermediate_size"], patch_size=v["patch_size"],
                 act=v["hidden_act"]),
      text=dict(width=t["hidden_size"], depth=t["num_hidden_layers"],
                num_heads=t["num_attention_heads"],
                mlp_dim=t["intermediate_size"], vocab_size=t["vocab_size"],
                context_length=t["max_position_embeddings"],
                act=t["hidden_act"]),
      embed_dim=hf["projection_dim"], image_size=v["image_size"],
  )


def hf_config(config: Mapping[str, Any]) -> dict:
  """Model config -> HF `CLIPConfig` dict for config.json."""
  _check_openai_style(config)
  img, txt, e = config["image"], config["text"], config["embed_dim"]
  vocab = txt["vocab_size"]
  return {
      "architectures": ["CLIPModel"],
      "model_type": "clip",
      "projection_dim": e,
      "logit_scale_init_value": 2.6592,
      "torch_dtype": "float32",
      "text_config": {
          "model_type": "clip_text_model", "hidden_size": txt["width"],
          "intermediate_size": txt["mlp_dim"],
          "num_attention_heads": txt["num_heads"],
          "num_hidden_layers": txt["depth"], "vocab_size": vocab,
          "max_position_embeddings": txt["context_length"],
          "hidden_act": txt["act"], "layer_norm_eps": 1e-5,
          "projection_dim": e,
          # SOT/EOT are the last two ids; HF pools at the first eos token.
          "bos_token_id": vocab - 2, "eos_token_id": vocab - 1,
          "pad_token_id": 1,
      },
      "vision_config": {
          "model_type": "clip_vision_model", "hidden_size": img["width"],
          "intermediate_size": img["mlp_dim"],
          "num_attention_heads": img["num_heads"],
          "num_hidden_layers": img["depth"],
          "image_size": config["image_size"], "patch_size": img["patch_size"],
          "hidden_act": img["act"], "layer_norm_eps": 1e-5,
          "projection_dim": e, "num_channels": 3,
      },
  }


def _find_weights(directory: str) -> str:
  for name in ("model.safetensors", "pytorch_model.bin"):
    if os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise FileNotFoundError(f"{directory}: no model.safetensors or "
                          "pytorch_model.bin")


def read_pytorch(path: str, *, quick_gelu: bool = True) -> tuple[dict, dict]:
  """Reads a PyTorch CLIP into (model config, Flax params).

  Args:
    path: an OpenAI/open_clip weights file, or a HF `CLIPModel` directory.
    quick_gelu: for OpenAI-key files only (HF configs name their activation).
  """
  try:
    if os.path.isdir(path):
      with open(os.path.join(path, "config.json")) as f:
        config = config_from_hf(json.load(f))
      state = hf_to_openai(torch_io.read_state_dict(_find_weights(path)))
    else:
      state = torch_io.read_state_dict(path)
      config = config_from_openai(state, quick_gelu=quick_gelu)
    return config, openai_to_flax(state, config)
  except (KeyError, ValueError) as e:
    raise type(e)(f"{path}: {e.args[0]}") from e


def _atomic_dir(path: str, write: Callable[[str], None]) -> None:
  """Writes a directory in a temp sibling and renames it into place."""
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


def _hf_processor_configs(config: Mapping[str, Any]) -> dict[str, dict]:
  """HF tokenizer/image-processor configs that reproduce OpenAI's transforms."""
  size = config["image_size"]
  return {
      "tokenizer_config.json": {
          "tokenizer_class": "CLIPTokenizer",
          # Without it HF does not truncate at the model's context.
          "model_max_length": config["text"]["context_length"],
          "bos_token": tokenizer_lib.SOT, "eos_token": tokenizer_lib.EOT,
          "unk_token": tokenizer_lib.EOT, "pad_token": tokenizer_lib.EOT,
      },
      "preprocessor_config.json": {
          "image_processor_type": "CLIPImageProcessor",
          "do_resize": True, "size": {"shortest_edge": size},
          "resample": 3,  # PIL bicubic
          "do_center_crop": True, "crop_size": {"height": size, "width": size},
          "do_rescale": True, "rescale_factor": 1 / 255,
          "do_normalize": True, "image_mean": list(eval_transform.CLIP_MEAN),
          "image_std": list(eval_transform.CLIP_STD), "do_convert_rgb": True,
      },
  }


def write_hf(path: str, config: Mapping, params: Mapping, tokenizer=None):
  """Writes a HF `CLIPModel` directory (config.json + model.safetensors).

  With a tokenizer, also its vocab.json/merges.txt and the tokenizer and
  image-processor configs, so `CLIPProcessor.from_pretrained` works too.
  """
  state = openai_to_hf(flax_to_openai(params, config))
  cfg = hf_config(config)

  files = {"config.json": cfg}
  if tokenizer is not None:
    files.update(_hf_processor_configs(config))

  def write(tmp):
    for name, content in files.items():
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(content, f, indent=2)
    torch_io.write_state_dict(state, os.path.join(tmp, "model.safetensors"))
    if tokenizer is not None:
      tokenizer.save_hf(tmp)

  _atomic_dir(path, write)


def write_open_clip(path: str, config: Mapping, params: Mapping) -> None:
  """Writes an OpenAI/open_clip-key state dict (.safetensors, .pt, .bin)."""
  _check_openai_style(config)
  for tower in ("image", "text"):
    width, heads = config[tower]["width"], config[tower]["num_heads"]
    if width != heads * OPENAI_HEAD_WIDTH:
      raise ValueError(
          f"The OpenAI/open_clip layout implies {OPENAI_HEAD_WIDTH}-wide "
          f"heads, but the {tower} tower has {heads} heads of width "
          f"{width // heads}: it would load back wrongly; export as 'hf', "
          "which records the head count")
  torch_io.write_state_dict(flax_to_openai(params, config), path)
