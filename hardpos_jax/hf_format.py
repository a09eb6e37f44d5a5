"""HF `CLIPModel` directories, in terms of OpenAI's state-dict keys.

A HF directory holds config.json (`CLIPConfig`), model.safetensors or
pytorch_model.bin and, for `CLIPProcessor`, tokenizer and image-processor
configs. This module renames HF weights to OpenAI's keys and back
(`hf_to_openai`, `openai_to_hf`), maps config.json to the model config and
back (`config_from_hf`, `hf_config`), and reads and writes whole directories
(`read_dir`, `write_dir`). It knows nothing of Flax: convert.py maps OpenAI's
keys to Flax params, and its `read_pytorch` and `write_hf` call this module.
"""

import json
import os
from typing import Any, Mapping

import numpy as np

from hardpos_jax import atomic
from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax import torch_io
from hardpos_jax.data import eval_transform
from hardpos_jax.models import clip


def check_openai_style(config: Mapping[str, Any]) -> None:
  """Raises ValueError for options PyTorch CLIP layouts have no slot for.

  OpenAI's keys and HF's `CLIPModel` both hold only OpenAI-style towers;
  big_vision-style structural options (pooling, biases, ...) do not map.
  """
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
  check_openai_style(config)
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


def read_dir(path: str) -> tuple[dict, dict]:
  """Reads a HF `CLIPModel` directory into (model config, OpenAI-key state).

  Raises:
    FileNotFoundError: no config.json, or no weights file.
    KeyError: a weight with no OpenAI name.
    ValueError: config.json is not a CLIP one this model can take.
  """
  with open(os.path.join(path, "config.json")) as f:
    config = config_from_hf(json.load(f))
  state = hf_to_openai(torch_io.read_state_dict(_find_weights(path)))
  return config, state


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


def write_dir(path: str, config: Mapping[str, Any],
              state: Mapping[str, np.ndarray], tokenizer=None) -> None:
  """Writes a HF `CLIPModel` directory (config.json + model.safetensors).

  With a tokenizer, also its vocab.json/merges.txt and the tokenizer and
  image-processor configs, so `CLIPProcessor.from_pretrained` works too.
  The directory appears whole or not at all (`atomic.write_dir`).

  Args:
    path: the directory; one already there is replaced.
    config: the model config.
    state: its OpenAI-key state dict (`convert.flax_to_openai`).
    tokenizer: a `tokenizer.Tokenizer`, or None for the weights alone.
  """
  state = openai_to_hf(state)
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

  atomic.write_dir(path, write)
