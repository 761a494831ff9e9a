"""The closed-form inner loops compute what the GradientTape loops compute.

Both read the same pre-drawn noise (leo_tf/leo/noise.py), so under a fixed seed the
outputs and the meta-gradients of every trainable variable must agree to float
tolerance, in training and evaluation, for every configuration the model supports.
"""

import numpy as np
import pytest
import tensorflow as tf

from helpers import assert_same_as_tape, random_episode, tiny_leo
from leo_tf.leo.config import ConfigError, LEOConfig
from leo_tf.leo.model import build_leo
from leo_tf.leo.noise import dropout, keep_masks, standard_normal

DIM = 16


def _pair(**overrides):
  """(closed-form model, tape model) with identical weights."""
  base = dict(num_shots=2, inner_steps_train=3, finetune_steps_train=2, inner_steps_test=2,
              finetune_steps_test=2, inner_lr_init=0.5, finetune_lr_init=0.05)
  base.update(overrides)
  fast = build_leo(tiny_leo(inner_gradients="closed_form", **base), DIM)
  tape = build_leo(tiny_leo(inner_gradients="tape", **base), DIM)
  tape.set_weights(fast.get_weights())
  return fast, tape


def _episode(shots, queries=4, tasks=2, seed=0):
  return random_episode(tasks, 3, shots, queries, DIM, seed, joint=False)


CASES = {
    "1-shot": dict(num_shots=1),
    "3-shot (3 codes per class)": dict(num_shots=3),
    "first order": dict(first_order=True),
    "no dropout": dict(dropout_rate=0.0),
    "decoder MLP (latent loop falls back to the tape)": dict(decoder_hidden=(6,)),
    "no relation network": dict(use_relation_net=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_outputs_and_meta_gradients_match_the_tape(case):
  overrides = CASES[case]
  fast, tape = _pair(**overrides)
  episode = _episode(overrides.get("num_shots", 2))
  checked = assert_same_as_tape(fast, tape, episode, training=True)
  assert checked >= 2  # the comparison saw real, non-zero meta-gradients


def test_evaluation_matches_the_tape():
  fast, tape = _pair(num_shots=3)
  assert_same_as_tape(fast, tape, _episode(3, queries=5, tasks=3, seed=4), training=False)


def test_unknown_shapes_as_in_serving():
  """The exported signature traces with N, K and M unknown: both paths must agree."""
  fast, tape = _pair()
  spec = tf.TensorSpec([1, None, None, DIM])
  adapted = {}
  for name, model in (("fast", fast), ("tape", tape)):
    fn = tf.function(lambda s, m=model: m.adapt(s, training=False)["weights"],
                     input_signature=[spec])
    adapted[name] = [fn(_episode(k, tasks=1)["support"]).numpy() for k in (1, 4)]
  for f, t in zip(adapted["fast"], adapted["tape"]):
    np.testing.assert_allclose(f, t, rtol=2e-5, atol=2e-6)


def test_unknown_inner_gradients_is_a_config_error():
  with pytest.raises(ConfigError, match="inner_gradients"):
    LEOConfig(inner_gradients="autograd")


# ------------------------------------------------------------------ the bulk noise


def test_keep_masks_drop_at_the_rate():
  keep = keep_masks([7, 11, 13, 17], 0.3, tf.constant([1, 2])).numpy()  # odd count
  assert keep.shape == (7, 11, 13, 17) and keep.dtype == bool
  sigma = np.sqrt(0.3 * 0.7 / keep.size)
  assert abs(np.mean(~keep) - 0.3) < 5 * sigma
  assert np.all(keep_masks([100], 0.0, tf.constant([1, 2])).numpy())


def test_dropout_zeroes_and_rescales():
  x = tf.constant([[1.0, -2.0, 3.0, 4.0]])
  keep = tf.constant([[True, False, True, False]])
  np.testing.assert_allclose(dropout(x, keep, 0.5), [[2.0, 0.0, 6.0, 0.0]])
  np.testing.assert_array_equal(dropout(x, None, 0.5), x)


def test_standard_normal_moments_and_shape():
  z = standard_normal(tf.constant([3, 33333]), tf.constant([5, 6])).numpy()  # odd count
  assert z.shape == (3, 33333) and np.all(np.isfinite(z))
  n = z.size
  assert abs(z.mean()) < 5 / np.sqrt(n)
  assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
  assert abs(np.mean(z ** 4) - 3.0) < 0.1                     # Gaussian kurtosis
  assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.005         # two-sided 5 % tail


def test_noise_is_a_function_of_the_seed():
  a = standard_normal([1000], tf.constant([1, 2])).numpy()
  b = standard_normal([1000], tf.constant([1, 2])).numpy()
  c = standard_normal([1000], tf.constant([1, 3])).numpy()
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 0.5
