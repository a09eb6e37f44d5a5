"""Train-step speed and memory: hardpos_jax against transformers.CLIPModel.

One optimiser step of the paper's recipe (configs/pos_neg.py): each of B
images has a caption, K=1 hard negative and P=1 hard positive, so 3B texts
go through the text tower; the loss has NegCLIP's HN columns and the HPs as
extra rows; AdamW after global-norm clipping. Inputs are random and already
on the device, so this times the step itself, not the input pipeline.

The peer is `transformers.CLIPModel` of the same architecture holding the
same weights (our HF export), the same loss written in PyTorch,
`torch.optim.AdamW` (fused on GPU) and `clip_grad_norm_`, under bf16 autocast
when --dtype=bfloat16; with --torch_compile also `torch.compile`d. Each
framework runs in its own subprocess (JAX would otherwise hold most of the
GPU's memory before PyTorch starts); the parent prints one table.

Per row: the first call's seconds (compilation included), the median ms of
--steps timed steps after --warmup (each step waited for), images/s, peak
device memory, and the loss of the first step: the same weights and inputs,
so the two agree up to bf16 or TF32 rounding.

  python benchmarks/train_step_speed.py --variant=B/32 --batch_size=256,1024
  .venv/bin/python benchmarks/train_step_speed.py --tiny   # CPU smoke run
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import pos_neg
from hardpos_jax import convert
from hardpos_jax import sharding
from hardpos_jax import train_step as ts
from hardpos_jax.models import clip
# pylint: enable=g-import-not-at-top,wrong-import-position

# Steps of the learning-rate schedule; only its shape depends on it.
_SCHEDULE_STEPS = 1000


def model_config(args) -> dict:
  """The benchmarked model's config dict."""
  if args.tiny:
    return clip.model_config(
        None, image=dict(width=64, depth=2, num_heads=2, mlp_dim=128,
                         patch_size=8),
        text=dict(width=64, depth=2, num_heads=2, mlp_dim=128),
        embed_dim=64, image_size=32, dtype=args.dtype)
  return clip.model_config(args.variant, dtype=args.dtype)


def make_inputs(config: dict, batch: int, length: int,
                max_tokens: int | None) -> tuple[np.ndarray, np.ndarray]:
  """float32 [B, S, S, 3] images and int32 [B, 3, L] caption, HN, HP ids.

  Each text: SOT, random ids, EOT at a random position below `max_tokens`
  (default: the context length C), zeros after it. The texts do not depend
  on L, so runs at several L see the same texts.
  """
  rng = np.random.default_rng(0)
  size, text = config["image_size"], config["text"]
  vocab, context = text["vocab_size"], text["context_length"]
  max_tokens = max_tokens or context
  if max_tokens > length:
    raise ValueError(f"--max_tokens={max_tokens} does not fit L={length}")
  images = rng.standard_normal((batch, size, size, 3), np.float32)
  ids = rng.integers(1, vocab - 2, (batch, 3, context), dtype=np.int32)
  ends = rng.integers(5, max_tokens, (batch, 3))
  ids[:, :, 0] = vocab - 2
  ids[np.arange(context)[None, None] > ends[..., None]] = 0
  np.put_along_axis(ids, ends[..., None], vocab - 1, axis=2)
  return images, ids[..., :length]


def time_steps(step, args) -> dict:
  """Runs `step()` (returns the loss, waited for) warmup + steps times."""
  start = time.perf_counter()
  first_loss = step()
  first_s = time.perf_counter() - start
  for _ in range(args.warmup - 1):
    step()
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return {"first_call_s": first_s, "ms": 1e3 * statistics.median(times),
          "ms_spread": 1e3 * (max(times) - min(times)),
          "first_loss": first_loss}


def run_jax(args) -> dict:
  """Our jitted train step (hardpos_jax.train_step) on every local device."""

  config = pos_neg.get_config()
  config.model = model_config(args)
  config.batch_size = args.batch_size
  mesh = sharding.create_mesh()
  params = clip.init_params(config.model.to_dict(), jax.random.PRNGKey(0))
  state = sharding.replicate(
      ts.create_train_state(config, params, jax.random.PRNGKey(0),
                            _SCHEDULE_STEPS), mesh)
  images, ids = make_inputs(config.model.to_dict(), args.batch_size,
                            args.text_length, args.max_tokens)
  ones = np.ones((args.batch_size, 1), bool)
  batch = jax.device_put(
      {"image": images, "text": ids[:, 0], "hard_negatives": ids[:, 1:2],
       "hard_negative_mask": ones, "hard_positives": ids[:, 2:3],
       "hard_positive_mask": ones},
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  train_step = ts.make_train_step(config, mesh)

  def step():
    nonlocal state
    state, metrics = train_step(state, batch)
    return float(metrics["loss"])

  out = time_steps(step, args)
  stats = jax.local_devices()[0].memory_stats() or {}
  out.update(impl=f"hardpos_jax (jax {jax.__version__})",
             device=jax.devices()[0].device_kind,
             peak_gib=stats.get("peak_bytes_in_use", float("nan")) / 2**30)
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


def run_torch(args) -> dict:
  """transformers.CLIPModel with our weights, the same loss and AdamW."""

  device = "cuda" if torch.cuda.is_available() else "cpu"
  config = model_config(args)
  optim = pos_neg.get_config().optim
  params = clip.init_params(config, jax.random.PRNGKey(0))
  state = convert.openai_to_hf(convert.flax_to_openai(params, config))
  del params
  model = transformers.CLIPModel(
      transformers.CLIPConfig(**convert.hf_config(config)))
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                        strict=False)
  model = model.to(device).train()
  decay = [p for p in model.parameters() if p.ndim >= 2]
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  optimizer = torch.optim.AdamW(
      [{"params": decay, "weight_decay": optim.weight_decay},
       {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr,
      betas=(optim.b1, optim.b2), eps=optim.eps, fused=device == "cuda")
  images, ids = make_inputs(config, args.batch_size, args.text_length,
                            args.max_tokens)
  pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
  texts = torch.from_numpy(ids.reshape(-1, ids.shape[-1])).long().to(device)
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=args.dtype == "bfloat16")

  def loss_of():
    with autocast:
      out = model(input_ids=texts, pixel_values=pixels)
    ztxt = out.text_embeds.float().reshape(args.batch_size, 3, -1)
    return torch_loss(out.image_embeds.float(), ztxt,
                      model.logit_scale.exp())

  forward = torch.compile(loss_of) if args.torch_compile else loss_of

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
  out = time_steps(step, args)
  compiled = " + torch.compile" if args.torch_compile else ""
  out.update(
      impl=f"transformers {transformers.__version__} (torch "
      f"{torch.__version__}){compiled}",
      device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
      peak_gib=(torch.cuda.max_memory_allocated() / 2**30
                if device == "cuda" else float("nan")))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default="B/32")
  parser.add_argument("--batch_size", default="256",
                      help="comma-separated global batch sizes")
  parser.add_argument("--dtype", default="bfloat16",
                      choices=("bfloat16", "float32"))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--text_length", default="77",
                      help="comma-separated text lengths L run (<= C)")
  parser.add_argument("--max_tokens", type=int,
                      help="texts end before this token (default: C); "
                      "COCO captions and NegCLIP negatives: 45 at most")
  parser.add_argument("--no_peer", action="store_true",
                      help="time hardpos_jax only")
  parser.add_argument("--torch_compile", action="store_true",
                      help="also time the peer under torch.compile")
  parser.add_argument("--tiny", action="store_true",
                      help="a tiny model, for a CPU smoke run")
  parser.add_argument("--worker", choices=("jax", "torch"),
                      help=argparse.SUPPRESS)
  parser.add_argument("--out", help="also write the rows as JSON here")
  args = parser.parse_args()
  if args.worker:
    args.batch_size = int(args.batch_size)
    args.text_length = int(args.text_length)
    run = run_jax if args.worker == "jax" else run_torch
    print("RESULT " + json.dumps(run(args)), flush=True)
    return

  rows = []
  workers = [("jax", [])]
  if not args.no_peer:
    workers.append(("torch", []))
    if args.torch_compile:
      workers.append(("torch", ["--torch_compile"]))
  runs = [(batch, length, *worker)
          for batch in args.batch_size.split(",")
          for length in args.text_length.split(",") for worker in workers]
  for batch, length, worker, extra in runs:
    flags = [f"--worker={worker}", f"--variant={args.variant}",
             f"--batch_size={batch}", f"--text_length={length}",
             f"--dtype={args.dtype}", f"--steps={args.steps}",
             f"--warmup={args.warmup}", *extra,
             *([f"--max_tokens={args.max_tokens}"] if args.max_tokens else []),
             *(["--tiny"] if args.tiny else [])]
    # The PyTorch worker uses JAX only to make the weights, on the CPU.
    env = {**os.environ, **({"JAX_PLATFORMS": "cpu"}
                            if worker == "torch" else {})}
    proc = subprocess.run([sys.executable, __file__, *flags], env=env,
                          capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
      print(f"{worker} {' '.join(extra)} at batch {batch}, L={length} "
            f"failed ({proc.returncode}):\n{proc.stderr[-3000:]}",
            flush=True)
      continue
    row = {"batch": int(batch), "text_length": int(length),
           **json.loads(lines[-1][len("RESULT "):])}
    rows.append(row)
    print(json.dumps(row), flush=True)

  print(f"\n{'tiny' if args.tiny else args.variant}, {args.dtype}, K=1 HN "
        "+ P=1 HP per image (3B texts), median of "
        f"{args.steps} steps on {rows[0]['device'] if rows else '?'}\n")
  print("| implementation | B | L | first call s | ms/step | images/s | "
        "peak GiB | first loss |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['impl']} | {r['batch']} | {r['text_length']} | "
          f"{r['first_call_s']:.1f} | "
          f"{r['ms']:.1f} (spread {r['ms_spread']:.1f}) | "
          f"{1e3 * r['batch'] / r['ms']:.0f} | {r['peak_gib']:.2f} | "
          f"{r['first_loss']:.5f} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
