"""`hardpos_jax.load`: every checkpoint kind gives the same embeddings as HF."""

import gzip
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch
import transformers

import hardpos_jax
from hardpos_jax import api
from hardpos_jax import tokenizer as tokenizer_lib

CAPTIONS = ["a photo of a cat", "chair in conference room",
            # id 0 ("!") inside a caption must not shorten the text run.
            "a !!!!!!!!!!!!!!!!!!!! dog",
            "two antelope and three giraffes", "the dog is to the rear of "
            "a man"]


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
  """The real BPE file cut to its first 300 merges (vocab 814)."""
  real = tokenizer_lib.default_bpe_path()
  if not os.path.isfile(real):
    pytest.skip(f"needs the BPE vocabulary at {real} (bash scripts/setup.sh)")
  with gzip.open(real, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")[:301]
  path = str(tmp_path_factory.mktemp("vocab") / "small.txt.gz")
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="module")
def hf_dir(small_vocab, tmp_path_factory):
  tok = tokenizer_lib.Tokenizer(small_vocab)
  torch.manual_seed(0)
  config = transformers.CLIPConfig(
      text_config=dict(
          # 64-wide heads, as OpenAI's: the open_clip layout implies them.
          hidden_size=128, intermediate_size=96, num_attention_heads=2,
          num_hidden_layers=2, vocab_size=tok.vocab_size,
          max_position_embeddings=77, hidden_act="quick_gelu",
          eos_token_id=tok.eot_token_id, bos_token_id=tok.sot_token_id),
      vision_config=dict(
          hidden_size=128, intermediate_size=96, num_attention_heads=2,
          num_hidden_layers=2, image_size=32, patch_size=8,
          hidden_act="quick_gelu"),
      projection_dim=32)
  model = transformers.CLIPModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp("hf") / "clip")
  model.save_pretrained(path)
  tok.save_hf(path)
  return path


def uint8_images(n=3, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
          for h, w in [(40, 56), (64, 32), (32, 32)][:n]]


def hf_embeddings(path, model, texts, pixels):
  hf = transformers.CLIPModel.from_pretrained(path).eval()
  ids = torch.from_numpy(model.tokenize(texts)).long()
  with torch.no_grad():
    out = hf(input_ids=ids,
             pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
  return out.image_embeds.numpy(), out.text_embeds.numpy()


def test_load_hf_dir_matches_transformers(hf_dir):
  model = hardpos_jax.load(hf_dir)  # the directory's own vocab.json/merges
  pixels = model.preprocess(uint8_images())
  assert pixels.shape == (3, 32, 32, 3) and pixels.dtype == np.float32
  zimg, ztxt = model.encode_image(pixels), model.encode_text(CAPTIONS)
  ref_img, ref_txt = hf_embeddings(hf_dir, model, CAPTIONS, pixels)
  np.testing.assert_allclose(zimg, ref_img, atol=1e-5)
  np.testing.assert_allclose(ztxt, ref_txt, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(ztxt, axis=1), 1, atol=1e-6)
  assert model.tokenize(CAPTIONS).shape == (5, 77)


@pytest.mark.parametrize("fmt,name", [("flax", "flax_dir"),
                                      ("open_clip", "w.safetensors"),
                                      ("open_clip", "w.pt"),
                                      ("hf", "hf_out")])
def test_export_then_load_gives_same_embeddings(hf_dir, small_vocab,
                                                tmp_path, fmt, name):
  model = hardpos_jax.load(hf_dir)
  pixels = model.preprocess(uint8_images())
  out = str(tmp_path / name)
  model.export(fmt, out)
  again = hardpos_jax.load(out, vocab=small_vocab)
  np.testing.assert_allclose(again.encode_image(pixels),
                             model.encode_image(pixels), atol=1e-6)
  np.testing.assert_allclose(again.encode_text(CAPTIONS),
                             model.encode_text(CAPTIONS), atol=1e-6)


def test_load_encode_export_need_no_tensorflow(hf_dir, small_vocab, tmp_path):
  """PyTorch users convert without TF: with it unimportable, all still work."""
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      for name in ("tensorflow", "tensorflow_datasets", "clu"):
        sys.modules[name] = None  # import raises ImportError
      import hardpos_jax
      model = hardpos_jax.load({hf_dir!r}, vocab={small_vocab!r})
      image = np.zeros((40, 56, 3), np.uint8)
      print(model.encode_image(model.preprocess([image])).shape,
            model.encode_text(["a cat"]).shape)
      model.export("open_clip", {str(tmp_path / "out.safetensors")!r})
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(1, 32) (1, 32)" in result.stdout
  assert (tmp_path / "out.safetensors").stat().st_size > 0


def test_export_command_writes_what_load_reads(hf_dir, small_vocab, tmp_path):
  out = str(tmp_path / "w.safetensors")
  result = subprocess.run(
      [sys.executable, "-m", "hardpos_jax.export", f"--input={hf_dir}",
       f"--output={out}", "--to=open_clip"], capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Wrote open_clip model to {out}" in result.stdout
  model, again = hardpos_jax.load(hf_dir), hardpos_jax.load(out, small_vocab)
  np.testing.assert_allclose(again.encode_text(CAPTIONS),
                             model.encode_text(CAPTIONS), atol=1e-6)


def test_load_params_is_load_without_the_tokenizer(hf_dir):
  config, params = api.load_params(hf_dir)
  model = hardpos_jax.load(hf_dir)
  assert config == model.config
  assert (jax.tree_util.tree_structure(params)
          == jax.tree_util.tree_structure(model.params))
  for got, want in zip(jax.tree_util.tree_leaves(params),
                       jax.tree_util.tree_leaves(model.params)):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="not a training workdir"):
    api.load_params(hf_dir, step=3)


def test_hf_export_is_a_complete_hf_model(hf_dir, tmp_path):
  model = hardpos_jax.load(hf_dir)
  out = str(tmp_path / "hf_out")
  model.export("hf", out)
  hf_tok = transformers.CLIPTokenizer.from_pretrained(out)
  hf_ids = hf_tok(CAPTIONS, padding="max_length", max_length=77)["input_ids"]
  ours = model.tokenize(CAPTIONS)
  # HF pads with EOT, OpenAI with 0; pooling at the first EOT ignores both.
  for row_hf, row in zip(hf_ids, ours):
    n = int((row != 0).sum())
    assert list(row_hf[:n]) == list(row[:n])
  pixels = model.preprocess(uint8_images())
  processor = transformers.CLIPImageProcessor.from_pretrained(out)
  assert processor.crop_size == {"height": 32, "width": 32}
  ref_img, ref_txt = hf_embeddings(out, model, CAPTIONS, pixels)
  np.testing.assert_allclose(model.encode_image(pixels), ref_img, atol=1e-5)
  np.testing.assert_allclose(model.encode_text(CAPTIONS), ref_txt, atol=1e-5)


def test_short_text_context_gives_same_embeddings(hf_dir):
  """encode_text runs at a shorter context; compare with the full 77."""
  model = hardpos_jax.load(hf_dir)
  full = np.asarray(model._text_fn(model.params, model.tokenize(CAPTIONS)))
  np.testing.assert_allclose(model.encode_text(CAPTIONS), full, atol=1e-6)


def test_logits_are_scaled_cosines(hf_dir):
  model = hardpos_jax.load(hf_dir)
  pixels = model.preprocess(uint8_images())
  hf = transformers.CLIPModel.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    ref = hf(input_ids=torch.from_numpy(model.tokenize(CAPTIONS)).long(),
             pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(model.logits(pixels, CAPTIONS),
                             ref.logits_per_image.numpy(), rtol=1e-5,
                             atol=1e-4)


def test_load_errors(hf_dir, tmp_path):
  with pytest.raises(ValueError, match="Tokenizer has 49408 tokens"):
    hardpos_jax.load(hf_dir, vocab=tokenizer_lib.default_bpe_path())
  with pytest.raises(FileNotFoundError, match="no model.safetensors"):
    os.makedirs(tmp_path / "empty")
    shutil.copy(os.path.join(hf_dir, "config.json"), tmp_path / "empty")
    hardpos_jax.load(str(tmp_path / "empty"))
  model = hardpos_jax.load(hf_dir)
  with pytest.raises(ValueError, match="Unknown export format"):
    model.export("onnx", str(tmp_path / "x"))
  with pytest.raises(ValueError, match=r"Expected images \[N, 32, 32, 3\]"):
    model.encode_image(np.zeros((2, 224, 224, 3), np.float32))
  model.export("flax", str(tmp_path / "f"))
  with pytest.raises(FileExistsError):
    model.export("flax", str(tmp_path / "f"))
