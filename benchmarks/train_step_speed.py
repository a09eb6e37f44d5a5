"""Train-step speed and memory: hardpos_jax against transformers.CLIPModel.

One optimiser step of the paper's recipe (configs/pos_neg.py): each of B
images has a caption, K=1 hard negative and P=1 hard positive, so 3B texts
go through the text tower; the loss has NegCLIP's HN columns and the HPs as
extra rows; AdamW after global-norm clipping. Inputs are already on the
device, so this times the step itself, not the input pipeline.

Texts (--texts): by default real ones, drawn from NegCLIP's validation TSV
(a COCO caption, one of its NegCLIP negatives as the HN and the other as a
stand-in HP of the same length), tokenized and padded to 77 as every
implementation receives them. Our step then runs at the batch's own length
bucket, as the trainer does (`global_batches.cut_texts`: exact under the
causal mask, tested); --fixed_length keeps 77. `--texts=random` puts EOT at
a random position below --max_tokens instead.

The peer is `transformers.CLIPModel` of the same architecture holding the
same weights (our HF export), the same loss written in PyTorch,
`torch.optim.AdamW` (fused on GPU) and `clip_grad_norm_`, under bf16 autocast
when --dtype=bfloat16; with --torch_compile also `torch.compile`d. Each
implementation runs in its own subprocess (JAX would otherwise hold most of
the GPU's memory before PyTorch starts); the parent prints one table.

Per row: the text length run, the first call's seconds (compilation
included), the median ms of --steps timed steps after --warmup (each step
waited for), images/s, model FLOPs per step (matmuls of both towers, forward
and backward = 3x forward, at the length that row runs; recomputation not
counted), the FLOP/s that gives and its share of the matmul peak measured
in the same run, peak device memory (and XLA's temporary buffers for ours),
and the loss of the first step: the same weights and inputs, so the rows
agree up to bf16 or TF32 rounding.

  python benchmarks/train_step_speed.py --variant=B/32 --batch_size=256,1024 \
      --torch_compile
  .venv/bin/python benchmarks/train_step_speed.py --batch_size=16 \
      --dtype=float32 --steps=5 --warmup=2          # the CPU comparison
  .venv/bin/python benchmarks/train_step_speed.py --tiny   # CPU smoke run
"""

import ast
import csv
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import flops
from configs import pos_neg
from hardpos_jax import convert
from hardpos_jax import hf_format
from hardpos_jax import sharding
from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax import train_step as ts
from hardpos_jax.data import global_batches
from hardpos_jax.models import clip
# pylint: enable=g-import-not-at-top,wrong-import-position

_VARIANT = flags.DEFINE_string("variant", "B/32", "model variant")
_BATCH_SIZE = flags.DEFINE_list("batch_size", ["256"], "global batch sizes")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"],
                           "compute dtype")
_STEPS = flags.DEFINE_integer("steps", 20, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 3, "untimed steps first")
_TEXTS = flags.DEFINE_enum("texts", "negclip", ["negclip", "random"],
                           "real caption lengths, or random EOT positions")
_NEGCLIP_TSV = flags.DEFINE_string(
    "negclip_tsv", os.path.join(os.path.dirname(__file__), "..", "..",
                                "shared", "data", "negclip",
                                "valid_neg_clip.tsv"),
    "NegCLIP's valid_neg_clip.tsv, for --texts=negclip")
_MAX_TOKENS = flags.DEFINE_integer(
    "max_tokens", None, "--texts=random: texts end before this token "
    "(default: the context)")
_FIXED_LENGTH = flags.DEFINE_bool(
    "fixed_length", False, "run our step at 77 tokens too (an extra row)")
_ACCUM_STEPS = flags.DEFINE_integer("accum_steps", 1,
                                    "our micro-batches per step")
_REMAT = flags.DEFINE_string("remat", "", "our remat policy (see "
                             "models/transformer.REMAT_POLICIES); '' = off")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "ours only: compile and report memory, no steps "
    "(for batches too slow to run here)")
_NO_PEER = flags.DEFINE_bool("no_peer", False, "time hardpos_jax only")
_TORCH_COMPILE = flags.DEFINE_bool(
    "torch_compile", False, "also time the peer under torch.compile")
_TINY = flags.DEFINE_bool("tiny", False, "a tiny model, for a CPU smoke run")
_WORKER = flags.DEFINE_enum("worker", None, ["jax", "torch"],
                            "internal: run one implementation")
_OUT = flags.DEFINE_string("out", None, "also write the rows as JSON here")

# Steps of the learning-rate schedule; only its shape depends on it.
_SCHEDULE_STEPS = 1000


def model_config() -> dict:
  """The benchmarked model's config dict."""
  if _TINY.value:
    return clip.model_config(
        None, image=dict(width=64, depth=2, num_heads=2, mlp_dim=128,
                         patch_size=8),
        text=dict(width=64, depth=2, num_heads=2, mlp_dim=128),
        embed_dim=64, image_size=32, dtype=_DTYPE.value)
  config = clip.model_config(_VARIANT.value, dtype=_DTYPE.value)
  if _REMAT.value:
    config["remat"] = _REMAT.value
  return config


def text_ids(config: dict, batch: int) -> np.ndarray:
  """int32 [B, 3, C] caption, HN and HP ids, zero-padded to the context."""
  rng = np.random.default_rng(0)
  text = config["text"]
  vocab, context = text["vocab_size"], text["context_length"]
  if _TEXTS.value == "negclip":
    with open(_NEGCLIP_TSV.value, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f, delimiter="\t"))
    tokenizer = tokenizer_lib.Tokenizer(context_length=context)
    texts = []
    for i in rng.choice(len(rows), batch, replace=len(rows) < batch):
      negatives = ast.literal_eval(rows[i]["neg_caption"])
      texts += [rows[i]["title"], negatives[0], negatives[-1]]
    return tokenizer(texts).reshape(batch, 3, context).astype(np.int32)
  max_tokens = _MAX_TOKENS.value or context
  ids = rng.integers(1, vocab - 2, (batch, 3, context), dtype=np.int32)
  ends = rng.integers(5, max_tokens, (batch, 3))
  ids[:, :, 0] = vocab - 2
  ids[np.arange(context)[None, None] > ends[..., None]] = 0
  np.put_along_axis(ids, ends[..., None], vocab - 1, axis=2)
  return ids


def make_inputs(config: dict, batch: int) -> tuple[np.ndarray, np.ndarray]:
  """float32 [B, S, S, 3] images and int32 [B, 3, C] text ids."""
  rng = np.random.default_rng(1)
  size = config["image_size"]
  return (rng.standard_normal((batch, size, size, 3), np.float32),
          text_ids(config, batch))


def time_steps(step) -> dict:
  """Runs `step()` (returns the loss, waited for) warmup + steps times."""
  start = time.perf_counter()
  first_loss = step()
  first_s = time.perf_counter() - start
  for _ in range(_WARMUP.value - 1):
    step()
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return {"first_call_s": first_s, "ms": 1e3 * statistics.median(times),
          "ms_spread": 1e3 * (max(times) - min(times)),
          "first_loss": first_loss}


def run_jax(batch_size: int, fixed_length: bool) -> dict:
  """Our jitted train step (hardpos_jax.train_step) on every local device."""
  config = pos_neg.get_config()
  config.model = model_config()
  config.batch_size = batch_size
  config.accum_steps = _ACCUM_STEPS.value
  mesh = sharding.create_mesh()
  params = clip.init_params(config.model.to_dict(), jax.random.PRNGKey(0))
  state = sharding.replicate(
      ts.create_train_state(config, params, jax.random.PRNGKey(0),
                            _SCHEDULE_STEPS), mesh)
  images, ids = make_inputs(config.model.to_dict(), batch_size)
  ones = np.ones((batch_size, 1), bool)
  batch = {"image": images, "text": ids[:, 0], "hard_negatives": ids[:, 1:2],
           "hard_negative_mask": ones, "hard_positives": ids[:, 2:3],
           "hard_positive_mask": ones}
  if not fixed_length:
    batch = global_batches.cut_texts(batch,
                                     clip.text_bucket(config.model.to_dict()))
  batch = jax.device_put(batch, sharding.batch_sharding(mesh, batch_size))
  start = time.perf_counter()
  compiled = ts.make_train_step(config, mesh).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  accum = (f", {_ACCUM_STEPS.value} micro-batches"
           if _ACCUM_STEPS.value > 1 else "")
  remat = f", remat {_REMAT.value}" if _REMAT.value else ""
  out = dict(impl=f"hardpos_jax (jax {jax.__version__}){accum}{remat}",
             device=jax.devices()[0].device_kind,
             text_length=int(batch["text"].shape[1]), compile_s=compile_s,
             temp_gib=memory.temp_size_in_bytes / 2**30)
  if _COMPILE_ONLY.value:
    return out

  def step():
    nonlocal state
    state, metrics = compiled(state, batch)
    return float(metrics["loss"])

  out.update(time_steps(step))
  out["first_call_s"] += compile_s
  stats = jax.local_devices()[0].memory_stats() or {}
  out.update(peak_gib=stats.get("peak_bytes_in_use", float("nan")) / 2**30,
             matmul_peak=flops.matmul_peak(_DTYPE.value))
  return out


def torch_loss(zimg, ztxt, scale):
  """The extra_row loss of `losses.clip_loss` for K = P = 1, all valid.

  zimg: [B, D] and ztxt: [B, 3, D] (caption, HN, HP) unit embeddings.
  """
  b = zimg.shape[0]
  caption, hp = ztxt[:, 0], ztxt[:, 2]
  # i2t: columns are all captions, HNs and HPs; an image's own caption and HP
  # are its two targets, each against the row's other columns.
  logits = scale * zimg @ ztxt.transpose(0, 1).reshape(-1, zimg.shape[1]).T
  eye = torch.eye(b, dtype=torch.bool, device=zimg.device)
  own = torch.cat([eye, torch.zeros_like(eye), eye], dim=1)
  rest = torch.logsumexp(logits.masked_fill(own, float("-inf")), dim=1)
  targets = torch.stack([logits[:, :b].diagonal(),
                         logits[:, 2 * b:].diagonal()], dim=1)
  i2t = (torch.logaddexp(targets, rest[:, None]) - targets).mean()
  # t2i: captions and HPs are rows; their image is the target.
  logits = scale * torch.cat([caption, hp]) @ zimg.T
  own = torch.cat([eye, eye])
  rest = torch.logsumexp(logits.masked_fill(own, float("-inf")), dim=1)
  target = logits[own]
  t2i = (torch.logaddexp(target, rest) - target).mean()
  return 0.5 * i2t + 0.5 * t2i


def run_torch(batch_size: int, compile_: bool) -> dict:
  """transformers.CLIPModel with our weights, the same loss and AdamW."""

  device = "cuda" if torch.cuda.is_available() else "cpu"
  config = model_config()
  optim = pos_neg.get_config().optim
  params = clip.init_params(config, jax.random.PRNGKey(0))
  state = hf_format.openai_to_hf(convert.flax_to_openai(params, config))
  del params
  model = transformers.CLIPModel(
      transformers.CLIPConfig(**hf_format.hf_config(config)))
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                        strict=False)
  model = model.to(device).train()
  decay = [p for p in model.parameters() if p.ndim >= 2]
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  optimizer = torch.optim.AdamW(
      [{"params": decay, "weight_decay": optim.weight_decay},
       {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr,
      betas=(optim.b1, optim.b2), eps=optim.eps, fused=device == "cuda")
  images, ids = make_inputs(config, batch_size)
  pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
  texts = torch.from_numpy(ids.reshape(-1, ids.shape[-1])).long().to(device)
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=_DTYPE.value == "bfloat16")

  def loss_of():
    with autocast:
      out = model(input_ids=texts, pixel_values=pixels)
    ztxt = out.text_embeds.float().reshape(batch_size, 3, -1)
    return torch_loss(out.image_embeds.float(), ztxt,
                      model.logit_scale.exp())

  forward = torch.compile(loss_of) if compile_ else loss_of

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = forward()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
    optimizer.step()
    with torch.no_grad():
      model.logit_scale.clamp_(max=np.log(100.0))
    return float(loss)  # Waits for the step.

  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  out = time_steps(step)
  compiled = " + torch.compile" if compile_ else ""
  out.update(
      impl=f"transformers {transformers.__version__} (torch "
      f"{torch.__version__}){compiled}",
      device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
      text_length=ids.shape[-1],
      peak_gib=(torch.cuda.max_memory_allocated() / 2**30
                if device == "cuda" else float("nan")))
  return out


def main(argv):
  if _WORKER.value:
    batch_size, variant = int(_BATCH_SIZE.value[0]), argv[-1]
    if _WORKER.value == "jax":
      row = run_jax(batch_size, fixed_length=variant == "fixed")
    else:
      row = run_torch(batch_size, compile_=variant == "compiled")
    print("RESULT " + json.dumps(row), flush=True)
    return

  workers = [("jax", "adaptive")]
  if _FIXED_LENGTH.value:
    workers.append(("jax", "fixed"))
  if not (_NO_PEER.value or _COMPILE_ONLY.value):
    workers.append(("torch", "eager"))
    if _TORCH_COMPILE.value:
      workers.append(("torch", "compiled"))
  # Every flag but the batch sizes goes to the workers as given.
  passed = [a for a in sys.argv[1:] if not a.startswith("--batch_size")]
  rows = []
  for batch in _BATCH_SIZE.value:
    for worker, variant in workers:
      # The PyTorch worker uses JAX only to make the weights, on the CPU.
      env = {**os.environ, **({"JAX_PLATFORMS": "cpu"}
                              if worker == "torch" else {})}
      proc = subprocess.run(
          [sys.executable, __file__, *passed, f"--worker={worker}",
           f"--batch_size={batch}", variant],
          env=env, capture_output=True, text=True, check=False)
      lines = [l for l in proc.stdout.splitlines()
               if l.startswith("RESULT ")]
      if proc.returncode or not lines:
        print(f"{worker} ({variant}) at batch {batch} failed "
              f"({proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        continue
      row = {"batch": int(batch), **json.loads(lines[-1][len("RESULT "):])}
      row["model_tflop"] = 3 * flops.forward_flops(
          model_config(), row["batch"], 3 * row["batch"],
          row["text_length"]) / 1e12
      rows.append(row)
      print(json.dumps(row), flush=True)

  if _COMPILE_ONLY.value:
    print("\n| implementation | B | L | compile s | XLA temp GiB |")
    print("|---|---|---|---|---|")
    for r in rows:
      print(f"| {r['impl']} | {r['batch']} | {r['text_length']} | "
            f"{r['compile_s']:.1f} | {r['temp_gib']:.2f} |")
    return
  peaks = [r["matmul_peak"] for r in rows if "matmul_peak" in r]
  peak = max(peaks) if peaks else float("nan")
  print(f"\n{'tiny' if _TINY.value else _VARIANT.value}, {_DTYPE.value}, "
        f"K=1 HN + P=1 HP per image (3B texts, {_TEXTS.value} lengths), "
        f"median of {_STEPS.value} steps on "
        f"{rows[0]['device'] if rows else '?'}; matmul peak "
        f"{peak / 1e12:.2f} TFLOP/s\n")
  print("| implementation | B | L | first call s | ms/step | images/s | "
        "model TFLOP | TFLOP/s | % of peak | peak GiB (XLA temp) | "
        "first loss |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    rate = r["model_tflop"] / (r["ms"] / 1e3)
    temp = f" ({r['temp_gib']:.2f})" if "temp_gib" in r else ""
    print(f"| {r['impl']} | {r['batch']} | {r['text_length']} | "
          f"{r['first_call_s']:.1f} | "
          f"{r['ms']:.1f} (spread {r['ms_spread']:.1f}) | "
          f"{1e3 * r['batch'] / r['ms']:.1f} | {r['model_tflop']:.3f} | "
          f"{rate:.3f} | {100 * rate * 1e12 / peak:.0f} | "
          f"{r['peak_gib']:.2f}{temp} | {r['first_loss']:.5f} |")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
