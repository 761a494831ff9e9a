"""Helpers shared by the tests: the tiny configurations, synthetic embedding sets, random
episodes, the comparison of the closed-form and tape inner loops, and the checks every LEO
variant must pass."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from leo_tf import checkpoints, gin_config
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.leo import weights
from leo_tf.leo.config import LEOConfig, TrainConfig
from leo_tf.leo.model import build_leo, task_losses
from leo_tf.runtime.rundir import RunDir

# ------------------------------------------------------------------ tiny configurations
# Seconds on CPU: the tests are about plumbing and numerics, not accuracy, and every inner
# step is traced. A test passes what it really varies as overrides.

# The tiny model: 3-way, a 4-d latent space, one relation layer of 8.
TINY_SIZES = dict(num_classes=3, latent_size=4, relation_hidden=(8,))
# The same model made 5-way (the default) with an 8-d latent space and a relation layer of 16.
TINY_5WAY = dict(num_classes=5, latent_size=8, relation_hidden=(16,))
# One latent and one fine-tuning step, in training and at test.
ONE_STEP = dict(inner_steps_train=1, inner_steps_test=1, finetune_steps_train=1,
                finetune_steps_test=1)
TINY_LEO = {**TINY_SIZES, **ONE_STEP}
# Tiny episodes and validations; how long a run is (num_steps, the *_every) is the test's.
TINY_TRAIN = dict(meta_batch_size=2, num_queries=2, num_val_episodes=8, val_batch_size=8,
                  val_num_queries=2)


def tiny_leo(**overrides) -> LEOConfig:
  """The tiny LEOConfig (TINY_LEO) with ``overrides``."""
  return LEOConfig(**{**TINY_LEO, **overrides})


def tiny_train(num_steps: int, **overrides) -> TrainConfig:
  """A TrainConfig of ``num_steps`` on tiny episodes (TINY_TRAIN), with ``overrides``."""
  return TrainConfig(**{**TINY_TRAIN, "num_steps": num_steps, **overrides})


def gin_bindings(**configurables) -> tuple:
  """Values as gin binding strings: ``gin_bindings(LEOConfig=dict(latent_size=4))`` is
  ``("LEOConfig.latent_size = 4",)``."""
  return tuple(f"{name}.{key} = {value!r}" for name, values in configurables.items()
               for key, value in values.items())


# tiny_leo() and the tiny episodes of tiny_train() for the runs that read gin (leo-train).
TINY_BINDINGS = gin_bindings(LEOConfig=TINY_LEO, TrainConfig=TINY_TRAIN)


def installed_font_files(names):
  """Paths of the named font files under /usr/share/fonts; asserts they are installed."""
  from leo_tf.data import glyph_fonts
  found = {os.path.basename(p): p for p in glyph_fonts.find_font_files()}
  missing = [f for f in names if f not in found]
  assert not missing, (f"fonts {missing} not installed: run "
                       "`bash tools/install_fonts.sh --minimal` (as root)")
  return tuple(found[f] for f in names)


def split_examples(image_split):
  """{key: (image, label)} of an ImageSplit, read through its tf.data pipeline."""
  return {ex["key"].decode(): (ex["image"], int(ex["label"]))
          for ex in image_split.dataset.as_numpy_iterator()}


def assert_same_examples(first_split, second_split):
  """Two builds of a split hold the same keys, images and labels."""
  first, second = split_examples(first_split), split_examples(second_split)
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key][0], second[key][0])
    assert first[key][1] == second[key][1]


def synthetic_embeddings(num_classes: int, per_class: int, dim: int = 64,
                         signal_dim: int = 4, noise: float = 0.3, seed: int = 0,
                         prefix: str = "c", basis_seed: int = 0) -> EmbeddingSet:
  """Classes whose means differ only inside a random ``signal_dim`` subspace.

  Every dimension carries isotropic noise, so in the raw space the class signal is
  buried, while a learned projection onto the subspace separates the classes.
  """
  # The subspace is shared by all splits made with one basis_seed; classes are not.
  basis = np.linalg.qr(np.random.default_rng(basis_seed).normal(size=(dim, dim)))[0]
  basis = basis[:, :signal_dim]
  rng = np.random.default_rng(seed + 1000)
  centers = rng.normal(size=(num_classes, signal_dim))
  ids = np.repeat(np.arange(num_classes), per_class)
  x = centers[ids] @ basis.T + rng.normal(size=(ids.size, dim)) * noise
  keys = np.array([f"{i}-{prefix}{c}-img{i}.JPEG" for i, c in enumerate(ids)])
  names = sorted({f"{prefix}{c}" for c in range(num_classes)})
  index = {n: i for i, n in enumerate(names)}
  class_ids = np.array([index[f"{prefix}{c}"] for c in ids], np.int32)
  return EmbeddingSet(x.astype(np.float32), class_ids, names, keys).l2_normalized()


def random_episode(b: int = 2, n: int = 5, k: int = 1, q: int = 3, d: int = 16,
                   seed: int = 0, unit: bool = True, joint: bool = True):
  """B tasks of N-way K-shot Gaussian embeddings: support [B, N, K, d], query [B, N, Q, d].

  ``joint`` draws [B, N, K+Q, d] at once and splits it into shots and queries;
  otherwise the support and then the query are drawn. ``unit`` L2-normalises rows.
  """
  rng = np.random.default_rng(seed)
  unit_rows = (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)) if unit else (
      lambda x: x)
  if joint:
    x = unit_rows(rng.normal(size=(b, n, k + q, d)).astype(np.float32))
    return dict(support=tf.constant(x[:, :, :k]), query=tf.constant(x[:, :, k:]))
  support = unit_rows(rng.normal(size=(b, n, k, d)))
  query = unit_rows(rng.normal(size=(b, n, q, d)))
  return dict(support=tf.constant(support, tf.float32), query=tf.constant(query, tf.float32))


def hand_set_linear_leo(**overrides):
  """A 2-way model on d = 2 with one latent dimension, a linear encoder and decoder and no
  noise, its weights set by hand: e0 encodes to z = 1, e1 to z = -1 (encoder columns:
  mean, u) and w_n = z_n * (1, 1) (the decoder's stddev half is unused without sampling)."""
  config = LEOConfig(**{**dict(num_classes=2, latent_size=1, use_relation_net=False,
                               stochastic=False, dropout_rate=0.0), **overrides})
  model = build_leo(config, dim=2)
  model.encoder.per_example.kernels[0].assign([[1.0, 0.0], [-1.0, 0.0]])
  model.decoder.network.kernels[0].assign([[1.0, 1.0, 0.3, 0.3]])
  return model


def meta_loss_and_gradients(model, episode, training, seed):
  """Outputs, mean task loss and its gradients for every trainable variable."""
  with tf.GradientTape() as tape:
    outputs = model(episode, training=training, seed=seed)
    loss = tf.reduce_mean(task_losses(outputs, model.config))
  return outputs, loss, tape.gradient(loss, model.trainable_variables)


# An unbalanced support mask for random_episode(2, 3, 2, ...): task 0 has 2, 1 and 2 shots,
# task 1 has 1 and 2 shots and a padded third class.
UNBALANCED_MASK = ((((1, 1), (1, 0), (1, 1)), ((1, 0), (1, 1), (0, 0))))


def padded_episode(padding=0.0, seed=0, mask=UNBALANCED_MASK):
  """random_episode(2, 3, 2, 4, 16) made unbalanced by ``mask``: its padded shots are
  ``padding`` (a number, e.g. NaN), the queries of a padded class masked out."""
  episode = random_episode(2, 3, 2, 4, 16, seed, joint=False)
  mask = tf.constant(mask, tf.float32)
  support = tf.where(mask[..., None] > 0, episode["support"], padding)
  query_mask = tf.broadcast_to(tf.reduce_max(mask, axis=2)[..., None], [2, 3, 4])
  return dict(episode, support=support, support_mask=mask, query_mask=query_mask)


def assert_same_outputs(first, second, tol):
  """Two (outputs, loss, gradients) of meta_loss_and_gradients agree to ``tol``, the
  gradients relative to their largest entry; returns how many were non-zero."""
  (out_f, loss_f, grads_f), (out_t, loss_t, grads_t) = first, second
  for key in ("logits", "final_latents", "query_loss", "kl", "encoder_penalty"):
    np.testing.assert_allclose(out_f[key], out_t[key], rtol=tol, atol=tol, err_msg=key)
  np.testing.assert_allclose(loss_f, loss_t, rtol=tol)
  checked = 0
  for g_f, g_t in zip(grads_f, grads_t):
    assert (g_f is None) == (g_t is None)
    if g_f is not None:
      scale = max(float(tf.reduce_max(tf.abs(g_t))), 1e-6)
      np.testing.assert_allclose(g_f / scale, g_t / scale, atol=tol)
      checked += int(float(tf.reduce_max(tf.abs(g_t))) > 0)
  return checked


def assert_same_as_tape(fast, tape, episode, training, tol=2e-5) -> int:
  """Closed-form and tape models (same weights) agree in outputs and meta-gradients;
  returns how many variables had a non-zero meta-gradient."""
  seed = tf.constant([21, 22], tf.int64)
  out_f, loss_f, grads_f = meta_loss_and_gradients(fast, episode, training, seed)
  out_t, loss_t, grads_t = meta_loss_and_gradients(tape, episode, training, seed)
  for key in ("logits", "final_latents", "query_loss", "kl"):
    np.testing.assert_allclose(out_f[key], out_t[key], rtol=tol, atol=tol, err_msg=key)
  np.testing.assert_allclose(loss_f, loss_t, rtol=tol)
  checked = 0
  for variable, g_f, g_t in zip(fast.trainable_variables, grads_f, grads_t):
    assert (g_f is None) == (g_t is None), variable.path
    if g_f is not None:
      scale = max(float(tf.reduce_max(tf.abs(g_t))), 1e-6)
      np.testing.assert_allclose(g_f / scale, g_t / scale, atol=tol, err_msg=variable.path)
      checked += int(float(tf.reduce_max(tf.abs(g_t))) > 0)
  return checked


class LEOVariantChecks:
  """What every LEO variant must do. A test class declares the variant by the shipped
  gin files that configure it (``GIN_FILES``) and inherits the checks; the sizes are
  shrunk (``SMALL``) so each check takes seconds."""

  GIN_FILES = ()
  SMALL = dict(TINY_SIZES, num_shots=2)

  def config(self, **overrides) -> LEOConfig:
    with gin_config.scoped(self.GIN_FILES):
      return dataclasses.replace(LEOConfig(), **{**self.SMALL, **overrides})

  def test_training_gives_finite_meta_gradients(self):
    # 640-d as in real use: at small d the untrained decoder's exp(u) stddevs can overflow.
    model = build_leo(self.config(), dim=640)
    _, loss, grads = meta_loss_and_gradients(model, random_episode(k=2, n=3, d=640), True,
                                             [0, 1])
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads if g is not None)

  def test_closed_form_matches_the_tape(self):
    fast = build_leo(self.config(inner_gradients="closed_form"), 16)
    tape = build_leo(self.config(inner_gradients="tape"), 16)
    tape.set_weights(fast.get_weights())
    episode = random_episode(2, 3, 2, 4, 16, joint=False)
    checked = assert_same_as_tape(fast, tape, episode, training=True)
    _, _, grads = meta_loss_and_gradients(fast, episode, True, tf.constant([21, 22], tf.int64))
    assert checked == sum(g is not None for g in grads) >= 1  # all real, non-zero

  # Support masks (leo/masks.py). The relative tolerance of an all-ones mask: the masked
  # sums divide where the unmasked means multiply, a few float32 roundings apart.
  ALL_ONES_TOL = 1e-6

  @pytest.mark.parametrize("inner_gradients", ["closed_form", "tape"])
  @pytest.mark.parametrize("training", [True, False])
  def test_an_all_ones_mask_is_the_unmasked_model(self, inner_gradients, training):
    model = build_leo(self.config(inner_gradients=inner_gradients), 16)
    episode = random_episode(2, 3, 2, 4, 16, joint=False)
    masked = dict(episode, support_mask=tf.ones([2, 3, 2]))
    seed = tf.constant([21, 22], tf.int64)
    checked = assert_same_outputs(meta_loss_and_gradients(model, masked, training, seed),
                                  meta_loss_and_gradients(model, episode, training, seed),
                                  self.ALL_ONES_TOL)
    assert checked >= 1

  def test_masked_closed_form_matches_the_tape(self):
    fast = build_leo(self.config(inner_gradients="closed_form"), 16)
    tape = build_leo(self.config(inner_gradients="tape"), 16)
    tape.set_weights(fast.get_weights())
    assert assert_same_as_tape(fast, tape, padded_episode(), training=True) >= 1
    assert_same_as_tape(fast, tape, padded_episode(), training=False)

  def test_padding_is_never_read(self):
    """NaN in the padded shots gives the outputs and meta-gradients of zeros there."""
    model = build_leo(self.config(), 16)
    seed = tf.constant([21, 22], tf.int64)
    zeros, nans = (meta_loss_and_gradients(model, padded_episode(p), True, seed)
                   for p in (0.0, float("nan")))
    assert assert_same_outputs(nans, zeros, 0.0) >= 1

  def test_evaluation_is_deterministic(self):
    model = build_leo(self.config(), dim=16)
    episode = random_episode(n=3, k=2, d=16)
    a = model(episode, training=False)
    b = model(episode, training=False, seed=tf.constant([9, 9]))
    np.testing.assert_array_equal(a["logits"].numpy(), b["logits"].numpy())
    np.testing.assert_array_equal(a["kl"].numpy(), [0.0, 0.0])

  def test_weights_restore_into_a_new_model(self, tmp_path):
    config = self.config()
    model = build_leo(config, dim=16)
    tf.train.Checkpoint(**{checkpoints.MODEL_VARIABLES: checkpoints.named_variables(model)}
                        ).save(os.path.join(RunDir(tmp_path).checkpoints("best"), "ckpt"))
    restored = weights.load_model(str(tmp_path), config, 16, "best", log=lambda _: None)
    episode = random_episode(n=3, k=2, d=16)
    np.testing.assert_array_equal(model(episode)["logits"].numpy(),
                                  restored(episode)["logits"].numpy())
    with pytest.raises(checkpoints.CheckpointMismatchError):
      weights.load_model(str(tmp_path), config, 12, "best", log=lambda _: None)

  def test_parameter_count_is_what_the_model_builds(self):
    config = self.config()
    model = build_leo(config, dim=16)
    assert config.parameter_count(16) == sum(int(np.prod(w.shape)) for w in model.weights)
