"""Flax CLIP vs transformers.CLIPModel parity, import/export, error paths.

Covers convert.py (OpenAI keys <-> Flax, the read/write entry points) and
hf_format.py (HF names and config.json <-> OpenAI keys and model config).
"""

import json
import os
import pickle
import zipfile

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hardpos_jax import convert
from hardpos_jax import hf_format
from hardpos_jax import torch_io
from hardpos_jax.models import clip

VOCAB = 50
CTX = 12


def tiny_hf_config(act="quick_gelu"):
  return transformers.CLIPConfig(
      text_config=dict(
          hidden_size=64, intermediate_size=96, num_attention_heads=4,
          num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=CTX,
          hidden_act=act, layer_norm_eps=1e-5, eos_token_id=VOCAB - 1,
          bos_token_id=VOCAB - 2, pad_token_id=1),
      vision_config=dict(
          hidden_size=48, intermediate_size=80, num_attention_heads=3,
          num_hidden_layers=2, image_size=32, patch_size=8, hidden_act=act,
          layer_norm_eps=1e-5),
      projection_dim=24,
  )


def random_hf_model(act="quick_gelu", seed=0):
  torch.manual_seed(seed)
  model = transformers.CLIPModel(tiny_hf_config(act)).eval()
  # HF initialises norms to 1 and biases to 0; random values make every
  # mapping (and every transpose) visible in the outputs.
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def inputs(seed=1):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
  ids = np.zeros((4, CTX), np.int32)
  for i, n in enumerate([3, 5, CTX - 2, 1]):
    ids[i, 0] = VOCAB - 2
    ids[i, 1:n + 1] = rng.integers(1, VOCAB - 2, n)
    ids[i, n + 1] = VOCAB - 1
  return images, ids


def hf_outputs(model, images, ids):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids).long(),
                pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
  return (out.image_embeds.numpy(), out.text_embeds.numpy(),
          out.logits_per_image.numpy())


def flax_outputs(config, params, images, ids):
  zimg, ztxt, out = clip.CLIP(**config).apply({"params": params}, images, ids)
  zimg, ztxt = np.asarray(zimg), np.asarray(ztxt)
  return zimg, ztxt, float(out["logit_scale"]) * zimg @ ztxt.T


def assert_same(a, b, tol=1e-5):
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=tol, rtol=tol)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "model")
  random_hf_model().save_pretrained(path)
  return path


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_import_matches_transformers(tmp_path, act):
  model = random_hf_model(act)
  model.save_pretrained(tmp_path)
  config, params = convert.read_pytorch(str(tmp_path))
  assert config["image"]["act"] == act
  images, ids = inputs()
  assert_same(flax_outputs(config, params, images, ids),
              hf_outputs(model, images, ids))


def test_hf_export_loads_in_transformers_and_matches(hf_dir, tmp_path):
  config, params = convert.read_pytorch(hf_dir)
  out = str(tmp_path / "exported")
  convert.write_hf(out, config, params)
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  reloaded = transformers.CLIPModel.from_pretrained(out).eval()
  images, ids = inputs(seed=2)
  assert_same(hf_outputs(reloaded, images, ids),
              flax_outputs(config, params, images, ids))
  assert_same(hf_outputs(reloaded, images, ids),
              hf_outputs(transformers.CLIPModel.from_pretrained(hf_dir).eval(),
                         images, ids))


def test_openai_state_dict_round_trips_exactly(hf_dir):
  state = hf_format.hf_to_openai(
      torch_io.read_state_dict(os.path.join(hf_dir, "model.safetensors")))
  config, params = convert.read_pytorch(hf_dir)
  back = convert.flax_to_openai(convert.openai_to_flax(state, config), config)
  assert set(back) == set(state)
  for key in state:
    np.testing.assert_array_equal(back[key], state[key], err_msg=key)
  # And HF <-> OpenAI names are inverse to each other.
  hf_state = torch_io.read_state_dict(os.path.join(hf_dir, "model.safetensors"))
  again = hf_format.openai_to_hf(state)
  assert set(again) == set(hf_state)
  for key in hf_state:
    np.testing.assert_array_equal(again[key], hf_state[key], err_msg=key)


def openai_file_config():
  """OpenAI-style heads: width / 64."""
  return clip.model_config(
      None,
      image=dict(width=128, depth=2, num_heads=2, mlp_dim=96, patch_size=8),
      text=dict(width=64, depth=1, num_heads=1, mlp_dim=80, vocab_size=VOCAB,
                context_length=CTX),
      embed_dim=24, image_size=32)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin"])
def test_openai_file_formats_round_trip(tmp_path, suffix):
  config = openai_file_config()
  params = clip.init_params(config, jax.random.key(3))
  path = str(tmp_path / f"weights{suffix}")
  convert.write_open_clip(path, config, params)
  got_config, got = convert.read_pytorch(path)
  assert got_config == config
  flat, got_flat = (flax.traverse_util.flatten_dict(p) for p in (params, got))
  assert set(flat) == set(got_flat)
  for k in flat:
    np.testing.assert_array_equal(np.asarray(flat[k]), got_flat[k])


def test_open_clip_training_checkpoint_layout(tmp_path):
  """open_clip saves {"epoch", "state_dict": {"module.<key>": ...}}."""
  config = openai_file_config()
  state = convert.flax_to_openai(clip.init_params(config, jax.random.key(4)),
                                 config)
  path = str(tmp_path / "epoch_5.pt")
  torch.save({"epoch": 5, "state_dict": {
      f"module.{k}": torch.from_numpy(v) for k, v in state.items()}}, path)
  got = torch_io.read_state_dict(path)
  assert set(got) == set(state)


class _Node(torch.nn.Module):

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x


def _scripted_module(state):
  """A TorchScript module tree with OpenAI's key names, fp16 like OpenAI's."""
  root = _Node()
  for key, value in state.items():
    *path, leaf = key.split(".")
    node = root
    for name in path:
      if not hasattr(node, name):
        node.add_module(name, _Node())
      node = getattr(node, name)
    node.register_parameter(
        leaf, torch.nn.Parameter(torch.from_numpy(value).half()))
  # OpenAI's archives also hold metadata ints and per-block attention masks.
  root.register_buffer("input_resolution", torch.tensor(32))
  root.transformer.resblocks.get_submodule("0").register_buffer(
      "attn_mask", torch.ones(CTX, CTX))
  return torch.jit.script(root)


def test_torchscript_archive_read_without_running_code(tmp_path):
  config = openai_file_config()
  params = clip.init_params(config, jax.random.key(5))
  state = convert.flax_to_openai(params, config)
  path = str(tmp_path / "ViT-tiny.pt")
  torch.jit.save(_scripted_module(state), path)
  assert torch_io.is_torchscript(path)
  with pytest.raises(RuntimeError, match="TorchScript"):  # torch refuses it
    torch.load(path, weights_only=True)
  got = torch_io.read_state_dict(path)
  assert set(got) == set(state)
  for k in state:
    np.testing.assert_array_equal(got[k], state[k].astype(np.float16))
  loaded_config, _ = convert.read_pytorch(path)
  assert loaded_config == config


def test_torchscript_reader_refuses_foreign_globals(tmp_path):
  class Evil:

    def __reduce__(self):
      return (os.system, ("echo pwned",))

  path = str(tmp_path / "evil.pt")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}))
    z.writestr("evil/constants.pkl", pickle.dumps(()))
  with pytest.raises(pickle.UnpicklingError, match="Refusing to load"):
    torch_io.read_state_dict(path)


def test_plain_pickle_is_refused(tmp_path):
  path = str(tmp_path / "model.pt")
  torch.save({"weights": torch.zeros(2), "config": object()}, path)
  with pytest.raises(ValueError, match="refusing to unpickle"):
    torch_io.read_state_dict(path)


def _openai_state(tmp_path):
  config = openai_file_config()
  state = convert.flax_to_openai(clip.init_params(config, jax.random.key(6)),
                                 config)
  return state


def test_missing_key_is_named(tmp_path):
  state = _openai_state(tmp_path)
  del state["visual.transformer.resblocks.1.ln_2.bias"]
  path = str(tmp_path / "w.safetensors")
  torch_io.write_state_dict(state, path)
  with pytest.raises(KeyError, match="resblocks.1.ln_2.bias"):
    convert.read_pytorch(path)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
  state = _openai_state(tmp_path)
  state["visual.transformer.resblocks.1.mlp.c_fc.weight"] = np.zeros(
      (64, 128), np.float32)
  path = str(tmp_path / "w.safetensors")
  torch_io.write_state_dict(state, path)
  with pytest.raises(ValueError) as e:
    convert.read_pytorch(path)
  msg = str(e.value)
  assert "w.safetensors" in msg and "resblocks.1.mlp.c_fc.weight" in msg
  assert "(64, 128)" in msg and "(128, 96)" in msg


def test_config_mismatch_against_given_model(tmp_path):
  state = _openai_state(tmp_path)
  other = openai_file_config()
  other["text"]["mlp_dim"] = 128
  with pytest.raises(ValueError, match=r"mlp.c_fc.weight.*\(80, 64\)"):
    convert.openai_to_flax(state, other)


def test_unexpected_weights_are_an_error(tmp_path):
  state = _openai_state(tmp_path)
  state["visual.attnpool.k_proj.weight"] = np.zeros((2, 2), np.float32)
  with pytest.raises(ValueError, match="attnpool"):
    convert.openai_to_flax(state, openai_file_config())


def test_truncated_file_is_an_error(tmp_path):
  state = _openai_state(tmp_path)
  for suffix in (".safetensors", ".pt"):
    path = str(tmp_path / f"w{suffix}")
    torch_io.write_state_dict(state, path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
      f.write(data[: len(data) // 2])
    with pytest.raises(Exception, match="w" + suffix.replace(".", r"\.")):
      convert.read_pytorch(path)


def test_failed_export_writes_nothing(tmp_path):
  config = clip.model_config(
      None, image=dict(width=32, depth=1, num_heads=2, mlp_dim=32,
                       patch_size=8, pool="gap"),
      text=dict(width=32, depth=1, num_heads=2, mlp_dim=32, vocab_size=VOCAB,
                context_length=CTX), embed_dim=16, image_size=32)
  params = clip.init_params(config, jax.random.key(0))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="image.pool"):
    convert.write_hf(str(out), config, params)
  with pytest.raises(ValueError, match="image.pool"):
    convert.write_open_clip(str(tmp_path / "w.safetensors"), config, params)
  assert sorted(os.listdir(tmp_path)) == []


def test_hf_config_round_trips(hf_dir):
  with open(os.path.join(hf_dir, "config.json")) as f:
    config = hf_format.config_from_hf(json.load(f))
  assert hf_format.config_from_hf(hf_format.hf_config(config)) == config
  with pytest.raises(ValueError, match="model_type"):
    hf_format.config_from_hf({"model_type": "siglip"})


def test_bf16_compute_is_close_to_fp32(hf_dir):
  config, params = convert.read_pytorch(hf_dir)
  images, ids = inputs()
  ref = flax_outputs(config, params, images, ids)
  got = flax_outputs({**config, "dtype": "bfloat16"}, params, images, ids)
  for x, y in zip(ref[:2], got[:2]):
    assert np.abs(x - y).max() < 0.05
    assert x.dtype == np.float32 and y.dtype == np.float32


def test_remat_gives_same_outputs_and_grads(hf_dir):
  config, params = convert.read_pytorch(hf_dir)
  images, ids = inputs()

  def loss(p, remat):
    zi, zt, _ = clip.CLIP(**{**config, "remat": remat}).apply(
        {"params": p}, images, ids)
    return jnp.sum(zi @ zt.T)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g0, g1 = grad(params, False), grad(params, True)
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_unknown_variant_and_pool_are_errors():
  with pytest.raises(ValueError, match="B/32"):
    clip.model_config("B/33")
  config = openai_file_config()
  config["text"]["pool"] = "first"
  with pytest.raises(ValueError, match="eot"):
    clip.init_params(config, jax.random.key(0))


def test_variant_sizes():
  shapes = convert.param_shapes(clip.model_config("B/32"))
  assert sum(int(np.prod(s)) for s in shapes.values()) == 151_277_313
  assert shapes[("img", "pos_embedding")] == (50, 768)
  shapes = convert.param_shapes(clip.model_config("L/14"))
  assert shapes[("img", "pos_embedding")] == (257, 1024)
  assert shapes[("txt", "head", "kernel")] == (768, 768)
