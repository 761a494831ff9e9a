"""LEO on padded support sets (leo/masks.py): a padded episode is the episode without its
padding, unbalanced shots take the per-class steps of the authors' form with their own
K_n, and nothing of a padded example reaches an output or a gradient.

(helpers.LEOVariantChecks pins every variant's all-ones mask to the unmasked model and its
masked closed form to the tape.)
"""

import numpy as np
import pytest
import tensorflow as tf

from helpers import (assert_same_outputs, hand_set_linear_leo, meta_loss_and_gradients,
                     padded_episode, random_episode, tiny_leo)
from leo_tf.leo import model as model_lib
from leo_tf.leo.layers import LatentEncoder, RelationNetwork
from leo_tf.leo.masks import SupportMask
from leo_tf.leo.model import build_leo
from leo_tf.leo.noise import Noise

DIM, N, K, SHOTS = 16, 3, 2, 3  # the real episode is N-way K-shot; padded to N+1, SHOTS
TOL = 1e-5  # float32 sums in another order (relative to the largest gradient entry)


def _pad(episode, n, k, value):
  """``episode`` padded with ``value`` to n classes and k shots, with its masks."""
  b, real_n, real_k, d = episode["support"].shape
  q = episode["query"].shape[2]
  pads = [[0, 0], [0, n - real_n], [0, k - real_k], [0, 0]]
  return dict(support=tf.pad(episode["support"], pads, constant_values=value),
              query=tf.pad(episode["query"], [[0, 0], [0, n - real_n], [0, 0], [0, 0]]),
              support_mask=tf.pad(tf.ones([b, real_n, real_k]), pads[:3]),
              query_mask=tf.pad(tf.ones([b, real_n, q]), [[0, 0], [0, n - real_n], [0, 0]]))


def _unpadded_noise(n, k):
  """A Noise factory for a padded episode that draws what the unpadded n-way k-shot
  episode draws, padded: so training runs see the same random numbers."""
  def make(config, support, seed, samples, **kwargs):
    noise = Noise(config, support[:, :n, :k], seed, min(samples, k), **kwargs)
    full_n = support.shape[1]

    def pad(t, width):
      if t is None:
        return None
      extra = [[0, 0]] * (t.shape.rank - 3)
      return tf.pad(t, [[0, 0], [0, full_n - n], [0, width - t.shape[2]]] + extra)
    noise.encoder_keep = pad(noise.encoder_keep, support.shape[2])
    noise.latent = pad(noise.latent, samples)
    noise.latent_keep = [pad(t, support.shape[2]) for t in noise.latent_keep]
    noise.finetune_keep = [pad(t, support.shape[2]) for t in noise.finetune_keep]
    noise.decode = [pad(t, samples) for t in noise.decode]
    query_keep = noise.query_keep
    noise.query_keep = lambda query: pad(query_keep(query[:, :n]), query.shape[2])
    return noise
  return make


VARIANTS = {
    "final": {},
    "paper (a code per class)": dict(latent_codes="per_class", use_relation_net=False),
    "deterministic": dict(stochastic=False),
    "random prior": dict(initialisation="random_prior"),
    "tape": dict(inner_gradients="tape"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("training", [True, False])
def test_a_padded_episode_is_the_episode_without_padding(variant, training, monkeypatch):
  """Padding shots (with garbage) and a whole class changes nothing for the real ones."""
  model = build_leo(tiny_leo(num_shots=K, inner_steps_train=2, finetune_steps_train=2,
                             **VARIANTS[variant]), DIM)
  episode = random_episode(2, N, K, 4, DIM, joint=False)
  padded = _pad(episode, N + 1, SHOTS, 7.0)
  monkeypatch.setattr(model_lib, "Noise", _unpadded_noise(N, K))
  seed = tf.constant([3, 4], tf.int64)
  reference = meta_loss_and_gradients(model, episode, training, seed)
  outputs, loss, grads = meta_loss_and_gradients(model, padded, training, seed)
  outputs = dict(outputs, logits=outputs["logits"][:, :N, :, :N],
                 final_latents=outputs["final_latents"][:, :N, :K])
  if not training or not model.config.stochastic or variant.startswith("paper"):
    outputs["final_latents"] = outputs["final_latents"][:, :, :1]
  assert assert_same_outputs((outputs, loss, grads), reference, TOL) >= 1
  # The padded class takes no probability.
  np.testing.assert_array_equal(tf.nn.softmax(padded_logits := model(padded)["logits"])
                                [..., N].numpy(), 0.0)
  assert padded_logits.shape[-1] == N + 1


def test_a_padded_class_of_maml_changes_nothing():
  """MAML's learned initial weights have num_classes rows: a padded class's row is never
  read, and its shots may be anything."""
  model = build_leo(tiny_leo(num_shots=K, initialisation="maml", num_classes=N + 1), DIM)
  padded = _pad(random_episode(2, N, K, 4, DIM, joint=False), N + 1, K, float("nan"))
  before = model(padded)["logits"][:, :N, :, :N]
  model.initial_weights.assign(tf.tensor_scatter_nd_update(
      model.initial_weights, [[N]], [tf.fill([DIM], 100.0)]))
  np.testing.assert_array_equal(model(padded)["logits"][:, :N, :, :N], before)


def _hand_reference(support, counts, query, lr, lr_ft):
  """One latent and one fine-tuning step of hand_set_linear_leo, class by class in numpy:
  z_n is the mean of x0 - x1 over class n's own shots, w_n = z_n (1, 1), and each class
  steps lr / K_n times the gradient of the summed support cross-entropy."""
  shots = [support[n, :counts[n]] for n in range(2)]
  x = np.concatenate(shots)
  y = np.repeat(np.eye(2), counts, axis=0)

  def weight_gradient(w):
    logits = x @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True) - y).T @ x                      # [2, d]
  z = np.array([np.mean(s[:, 0] - s[:, 1]) for s in shots])
  w = z[:, None] * np.ones(2)
  z = z - lr / np.asarray(counts) * weight_gradient(w).sum(1)          # dw/dz = (1, 1)
  w = z[:, None] * np.ones(2)
  w = w - lr_ft / np.asarray(counts)[:, None] * weight_gradient(w)
  return query @ w.T


def test_unbalanced_shots_step_by_their_own_count():
  model = hand_set_linear_leo(inner_steps_test=1, finetune_steps_test=1, inner_lr_init=0.7,
                              finetune_lr_init=0.4)
  support = np.array([[[1.0, 0.2], [9.0, 9.0], [9.0, 9.0]],      # class 0: 1 shot
                      [[0.1, 1.0], [0.3, 0.8], [-0.2, 0.5]]], np.float32)  # 3 shots
  mask = np.array([[1, 0, 0], [1, 1, 1]], np.float32)
  query = np.array([[0.6, 0.5], [0.4, 0.6]], np.float32)
  episode = dict(support=tf.constant(support[None]), support_mask=tf.constant(mask[None]),
                 query=tf.constant(np.broadcast_to(query, (2, 2, 2))[None]))
  logits = model(episode)["logits"].numpy()[0, 0]                 # every class's queries
  expected = _hand_reference(support, [1, 3], query, 0.7, 0.4)
  np.testing.assert_allclose(logits, expected, rtol=1e-5)
  # A step of lr / K_max for every class (the balanced form) is measurably different.
  balanced = _hand_reference(support, [1, 3], query, 0.7 * np.array([1, 3]) / 3,
                             0.4 * np.array([[1], [3]]) / 3)
  assert np.abs(balanced - expected).max() > 1e-3


def test_the_encoder_reads_only_real_examples():
  """Relation pairs among the real examples, means over a class's own shots: the encoder
  of a padded support set is the class-by-class computation on the real examples, and
  no gradient reaches a padded one."""
  encoder = LatentEncoder(4, (), (8,), name="encoder")
  support = tf.random.stateless_normal([1, 2, 3, DIM], seed=[1, 2])
  mask = tf.constant([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
  encoder(support)
  with tf.GradientTape() as tape:
    tape.watch(support)
    out = encoder(support, support_mask=SupportMask(mask))
  real = tf.concat([support[:, 0, :2], support[:, 1, :1]], axis=1)          # [1, 3, d]
  codes = encoder.relation.pairwise_reference(encoder.per_example(real))    # [1, 3, 8]
  expected = tf.stack([tf.reduce_mean(codes[:, :2], 1), codes[:, 2]], axis=1)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  grad = tape.gradient(out, support).numpy()
  assert np.all(grad[mask.numpy() == 0] == 0) and np.all(grad[mask.numpy() == 1] != 0)


def test_the_ensemble_of_a_padded_episode_is_the_unpadded_ensemble():
  from leo_tf.analysis.ensemble import ensemble_logits
  model = build_leo(tiny_leo(num_shots=K), DIM)
  episode = random_episode(2, N, K, 4, DIM, joint=False)
  padded = _pad(episode, N, SHOTS, float("nan"))
  seed = tf.constant([5, 6], tf.int64)
  np.testing.assert_allclose(
      ensemble_logits(model, padded["support"], padded["query"], 3, seed,
                      padded["support_mask"]),
      ensemble_logits(model, episode["support"], episode["query"], 3, seed),
      rtol=TOL, atol=TOL)


def test_the_packed_encoder_is_the_padded_masked_one(monkeypatch):
  """The encoder packs a task's real examples before the relation network (P^2 pairs, not
  (N*K)^2): values and gradients are those of the relation network over the whole padded
  grid with its pairs masked, for tasks with different numbers of real examples."""
  episode = padded_episode(seed=3)                     # 5 and 3 real examples of 6 slots
  support, mask = episode["support"], SupportMask(episode["support_mask"])
  encoder = LatentEncoder(4, (8,), (8, 8), name="encoder")
  encoder(support)
  widths, relation = [], RelationNetwork.call
  monkeypatch.setattr(RelationNetwork, "call", lambda self, codes, present=None: (
      widths.append(codes.shape[1]) or relation(self, codes, present)))

  def padded_grid(x):
    codes = encoder.per_example(x)                                          # [B, N, K, h]
    flat = tf.reshape(codes, [2, 6, codes.shape[-1]])
    out = encoder.relation(flat, tf.reshape(mask.examples, [2, 6]))
    return mask.class_mean(tf.reshape(out, [2, 3, 2, 8]))

  outputs, grads = [], []
  for run in (lambda x: encoder(x, support_mask=mask), padded_grid):
    with tf.GradientTape() as tape:
      tape.watch(support)
      out = run(support)
      loss = tf.reduce_sum(tf.sin(out))
    outputs.append(out)
    grads.append(tape.gradient(loss, [support] + encoder.trainable_variables))
  assert widths == [5, 6]                               # packed, then the padded grid
  np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)
  assert np.abs(outputs[1].numpy()).max() > 0.1
  for packed, padded in zip(*grads):
    np.testing.assert_allclose(packed, padded, rtol=1e-5, atol=1e-6)
  assert np.abs(grads[1][0].numpy()).max() > 0 and len(grads[1]) == 1 + 5  # 2 + 3 kernels


def test_pack_keeps_the_real_examples_in_order():
  x = tf.reshape(tf.range(12.0), [2, 3, 2, 1])              # example [b, n, k] is 6b + 2n + k
  mask = SupportMask([[[1, 0], [1, 1], [0, 0]], [[0, 1], [0, 0], [1, 0]]])
  packed, present = mask.pack(x)
  np.testing.assert_array_equal(packed[..., 0], [[0, 2, 3], [7, 10, 6]])
  np.testing.assert_array_equal(present, [[1, 1, 1], [1, 1, 0]])
  np.testing.assert_array_equal(mask.unpack(packed)[..., 0],
                                [[[0, 0], [2, 3], [0, 0]], [[0, 7], [0, 0], [10, 0]]])
