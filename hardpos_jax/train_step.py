"""The data-parallel train step: both towers, the sharded HN/HP loss, AdamW.

The step is one `jax.jit` over the device mesh: the towers run under GSPMD on
the batch-sharded inputs (params replicated), and the loss is the shard_map-ed
`losses.sharded_clip_loss`, so each device scores its own rows against the
all-gathered columns. The same program runs on one CPU, 8 fake devices and a
multi-host pod slice.

With `accum_steps` > 1 the step still optimises the loss of its whole
global batch, whose negatives are the batch's own captions and HNs, but holds
the activations of one micro-batch at a time, as GradCache (Gao et al. 2021)
and open_clip's `--accum-freq` do: embed every micro-batch without keeping
activations, take the loss and its gradient with respect to the embeddings
on the full batch, then back-propagate those gradients micro-batch by
micro-batch through the towers.

Texts may come at any length L up to the context: the input pipeline cuts a
batch's texts to the shortest length bucket holding every EOT
(`clip.text_bucket`), which gives the same loss and gradients as the full
context, so a step costs what its captions need.
"""

from collections.abc import Sequence
import functools
import re
from typing import Any

import flax.traverse_util
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hardpos_jax import losses
from hardpos_jax import sharding
from hardpos_jax.models import clip


class TrainState(train_state.TrainState):
  """Flax TrainState plus the loss's PRNG key (raw uint32 [2], so that
  `sharding.replicate` can place it on every host)."""

  rng: jax.Array


def create_learning_rate_fn(config: ml_collections.ConfigDict,
                            total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `config.lr`, then cosine decay to 0."""
  return optax.warmup_cosine_decay_schedule(
      0.0, config.lr, config.warmup_steps,
      max(total_steps, config.warmup_steps + 1))


def weight_decay_mask(params: Any) -> Any:
  """True for weight matrices; False for biases, norms, cls, and `t`.

  As OpenAI / open_clip / NegCLIP: decay only parameters with >= 2 dims.
  """
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def param_labels(params: Any, lr_mults: Sequence[tuple[str, float]]) -> Any:
  """Each param's group: the first `lr_mults` regex matching its "/"-joined
  path (re.search), else "default"."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  labels = {path: next((rx for rx, _ in lr_mults if re.search(rx, path)),
                       "default") for path in flat}
  return flax.traverse_util.unflatten_dict(labels, sep="/")


def create_optimizer(config: ml_collections.ConfigDict,
                     lr_fn: optax.Schedule) -> optax.GradientTransformation:
  """Frozen groups zeroed, global-norm clipping, AdamW per lr group.

  `config.lr_mults` pairs (regex, multiplier): a multiplier of 0 freezes the
  group (no update, no weight decay, no share of the clipping norm).
  """
  mults = {"default": 1.0, **dict(config.lr_mults)}
  labels = functools.partial(param_labels, lr_mults=tuple(config.lr_mults))

  def adamw(mult):
    return optax.adamw(lambda step: mult * lr_fn(step), b1=config.b1,
                       b2=config.b2, eps=config.eps,
                       weight_decay=config.weight_decay,
                       mask=weight_decay_mask)

  return optax.chain(
      optax.multi_transform(
          {k: optax.set_to_zero() if m == 0 else optax.identity()
           for k, m in mults.items()}, labels),
      optax.clip_by_global_norm(config.grad_clip),
      optax.multi_transform(
          {k: optax.set_to_zero() if m == 0 else adamw(m)
           for k, m in mults.items()}, labels),
  )


def create_train_state(config: ml_collections.ConfigDict, params: Any,
                       rng: jax.Array, total_steps: int) -> TrainState:
  """A fresh state over `params` (from `clip.init_params` or an import)."""
  lr_fn = create_learning_rate_fn(config.optim, total_steps)
  model = clip.CLIP(**config.model)
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=create_optimizer(config.optim, lr_fn), rng=rng)


def batch_texts(batch: dict[str, jax.Array]) -> jax.Array:
  """[B, L] captions, [B, K, L] HNs, [B, P, L] HPs -> [B, 1 + K + P, L]."""
  return jnp.concatenate([batch["text"][:, None], batch["hard_negatives"],
                          batch["hard_positives"]], axis=1)


def embed(apply_fn, params: Any, images: jax.Array, texts: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Both towers: images [B, S, S, 3], texts [B, N, L] -> unit embeddings
  [B, E] and [B, N, E].

  The texts are flattened row-major per example, so a batch-sharded input
  stays local per device.
  """
  b, n, length = texts.shape
  zimg, ztxt, _ = apply_fn({"params": params}, images,
                           texts.reshape(b * n, length))
  return zimg, ztxt.reshape(b, n, -1)


def batch_loss(loss_fn, batch: dict[str, jax.Array], rng: jax.Array,
               zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`loss_fn` on embeddings zimg [B, E] and ztxt [B, 1 + K + P, E] (caption,
  HNs, HPs), with the batch's HN and HP masks."""
  k = batch["hard_negatives"].shape[1]
  p = batch["hard_positives"].shape[1]
  return loss_fn(zimg, ztxt[:, 0], logit_scale=logit_scale,
                 zneg=ztxt[:, 1:1 + k] if k else None,
                 neg_mask=batch["hard_negative_mask"] if k else None,
                 zpos=ztxt[:, 1 + k:] if p else None,
                 pos_mask=batch["hard_positive_mask"] if p else None,
                 rng=rng)


def accumulated_grads(apply_fn, params: Any, images: jax.Array,
                      texts: jax.Array, loss_of, steps: int,
                      micro_sharding: jax.sharding.Sharding | None = None):
  """The full-batch loss and gradients, one micro-batch's activations at a
  time (GradCache).

  Args:
    apply_fn, params: the model.
    images: [B, S, S, 3]; texts: [B, N, L].
    loss_of: (zimg [B, E], ztxt [B, N, E], logit_scale) -> (loss, metrics).
    steps: micro-batches, dividing B; micro-batch j holds rows j, j + steps,
      j + 2 steps, ..., so each stays spread over every device.
    micro_sharding: of the [steps, B / steps, ...] micro-batches.

  Returns:
    ((loss, metrics), grads), as `jax.value_and_grad(..., has_aux=True)`.
  """

  def split(x):
    x = sharding.split_rows(x, steps)
    if micro_sharding is None:
      return x
    return jax.lax.with_sharding_constraint(x, micro_sharding)

  micro = (split(images), split(texts))
  # No gradient is taken through these, so no activations are kept.
  zimg, ztxt = jax.tree.map(sharding.merge_rows, jax.lax.map(
      lambda xs: embed(apply_fn, params, *xs), micro))
  (loss, metrics), (dimg, dtxt, dt) = jax.value_and_grad(
      lambda zimg, ztxt, t: loss_of(zimg, ztxt, jnp.exp(t)),
      argnums=(0, 1, 2), has_aux=True)(zimg, ztxt, params["t"])

  def backward(total, xs):
    inputs, cotangents = xs
    _, vjp = jax.vjp(lambda p: embed(apply_fn, p, *inputs), params)
    return jax.tree.map(jnp.add, total, vjp(cotangents)[0]), None

  grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params),
                          (micro, (split(dimg), split(dtxt))))
  # The temperature enters the loss directly, not through the towers.
  return (loss, metrics), {**grads, "t": grads["t"] + dt}


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               loss_fn, max_logit_scale: float, accum_steps: int = 1,
               micro_sharding: jax.sharding.Sharding | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on a global batch.

  Args:
    state: replicated TrainState.
    batch: global arrays sharded over the batch axis: `image` [B, S, S, 3],
      `text` [B, L], `hard_negatives` [B, K, L], `hard_negative_mask`
      [B, K], `hard_positives` [B, P, L], `hard_positive_mask` [B, P]; with
      `texts_cut` [B] (the input pipeline's), its sum is a metric.
    loss_fn: from `losses.make_sharded_loss` (or `clip_loss` on one device).
    max_logit_scale: exp(t) is clamped to this after the update (CLIP: 100).
    accum_steps: micro-batches per step (see `accumulated_grads`); the
      update is the same for any value.
    micro_sharding: of the micro-batches, when `accum_steps` > 1.

  Returns:
    (new state, metrics): the loss's terms and metrics, `loss`,
    `logit_scale`, `grad_norm` and `texts_cut`; all replicated scalars.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  loss_of = functools.partial(batch_loss, loss_fn, batch, rng)
  images, texts = batch["image"], batch_texts(batch)
  if accum_steps > 1:
    (loss, metrics), grads = accumulated_grads(
        state.apply_fn, state.params, images, texts, loss_of, accum_steps,
        micro_sharding)
  else:
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: loss_of(*embed(state.apply_fn, p, images, texts),
                          jnp.exp(p["t"])), has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  # CLIP clamps the learned temperature so logits never exceed 100.
  params = dict(state.params)
  params["t"] = jnp.minimum(params["t"], jnp.log(max_logit_scale))
  state = state.replace(params=params)
  metrics = {**metrics, "loss": loss, "logit_scale": jnp.exp(params["t"]),
             "grad_norm": optax.tree.norm(grads)}
  if "texts_cut" in batch:
    # A step's texts longer than input.text_length: 0 means the length lost
    # nothing (causal mask + EOT pooling make a shorter length exact).
    metrics["texts_cut"] = jnp.sum(batch["texts_cut"])
  return state, metrics


def make_train_step(config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh):
  """`train_step` jitted over `mesh`, donating the state's buffers."""
  loss_fn = losses.make_sharded_loss(mesh,
                                     losses.LossOptions.of(config.loss))
  step = functools.partial(
      train_step, loss_fn=loss_fn, max_logit_scale=config.loss.max_logit_scale,
      accum_steps=config.accum_steps,
      micro_sharding=jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXIS)))
  return jax.jit(step, donate_argnums=(0,))
