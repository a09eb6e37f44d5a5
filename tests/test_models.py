"""The towers' attention path and rematerialisation change no number."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hardpos_jax.models import clip
from hardpos_jax.models import transformer
import tiny


@pytest.mark.parametrize("causal", [False, True])
def test_fused_attention_is_flaxs_dot_product_attention(causal):
  q, k, v = jax.random.normal(jax.random.key(0), (3, 4, 9, 2, 8))
  mask = nn.make_causal_mask(jnp.ones((4, 9))) if causal else None
  want = nn.dot_product_attention(q, k, v, mask=mask)
  got = transformer.fused_attention(q, k, v, causal=causal)
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
  if causal:  # query i must not see key j > i
    later = v.at[:, 5:].set(0.0)
    np.testing.assert_array_equal(
        transformer.fused_attention(q, k, later, causal=True)[:, :5],
        got[:, :5])


@pytest.mark.parametrize("policy", [True, *transformer.REMAT_POLICIES])
def test_remat_gives_the_same_embeddings_and_gradients(policy):
  batch = tiny.batch(0)
  params = tiny.init_params()

  def loss_and_grads(remat):
    model = clip.CLIP(**{**tiny.model_config(), "remat": remat})

    def loss(params):
      zimg, ztxt, _ = model.apply({"params": params}, batch["image"],
                                  batch["text"])
      return jnp.sum(zimg @ ztxt.T)

    return jax.value_and_grad(loss)(params)

  want, want_grads = loss_and_grads(False)
  got, got_grads = loss_and_grads(policy)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6,
                                                       rtol=1e-5),
               got_grads, want_grads)


def test_unknown_remat_policy():
  model = clip.CLIP(**{**tiny.model_config(), "remat": "everything"})
  with pytest.raises(ValueError, match="Unknown remat policy 'everything'"):
    model.init(jax.random.key(0), jnp.zeros((1, tiny.IMAGE, tiny.IMAGE, 3)))


def test_towers_embed_images_in_chunks_on_cpu():
  """Batches of several chunks: the rows keep their order and values."""
  chunk = clip.CPU_IMAGE_CHUNK * jax.device_count()
  images = jax.random.normal(jax.random.key(1),
                             (2 * chunk, tiny.IMAGE, tiny.IMAGE, 3))
  params = tiny.init_params()
  image_fn, _ = clip.towers(tiny.model_config())
  want = clip.CLIP(**tiny.model_config()).apply({"params": params},
                                                images=images)[0]
  assert jax.default_backend() == "cpu"
  np.testing.assert_allclose(image_fn(params, images), want, atol=1e-6)
  # A batch that is not a multiple of the chunk runs whole.
  np.testing.assert_allclose(image_fn(params, images[:chunk + 8]),
                             want[:chunk + 8], atol=1e-6)
