"""ECE, NLL and the reliability diagram against numbers computed by hand."""

import math

import numpy as np
import pytest

from leo_tf.analysis import calibration

# Four 2-class predictions: confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right).
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
LABELS = np.array([0, 1, 1, 0])


def test_ece_by_hand_with_four_bins():
  # Bins (0.5, 0.75] and (0.75, 1]: {0.7 right, 0.6 right} -> |1 - 0.65| = 0.35;
  # {0.9 right, 0.8 wrong} -> |0.5 - 0.85| = 0.35. Each holds half the predictions.
  ece = calibration.expected_calibration_error(PROBS, LABELS, num_bins=4)
  assert ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.35)


def test_ece_one_bin_is_the_gap_of_the_means():
  # One bin: |accuracy 3/4 - mean confidence 0.75| = 0.
  assert calibration.expected_calibration_error(PROBS, LABELS, num_bins=1) == pytest.approx(0)


def test_ece_of_a_perfectly_confident_correct_set_is_zero_and_wrong_is_one():
  onehot = np.eye(3)
  assert calibration.expected_calibration_error(onehot, np.arange(3)) == pytest.approx(0.0)
  assert calibration.expected_calibration_error(onehot, np.array([1, 2, 0])) == pytest.approx(1)


def test_bin_edges_are_right_closed():
  np.testing.assert_array_equal(
      calibration.bin_index(np.array([0.0, 0.25, 0.2500001, 0.5, 1.0]), 4), [0, 0, 1, 1, 3])


def test_nll_by_hand():
  expected = -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.6)) / 4
  assert calibration.negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected)


def test_mask_drops_padding_queries():
  probs = np.concatenate([PROBS, [[0.99, 0.01]]])
  labels = np.concatenate([LABELS, [1]])                # a confident mistake, masked out
  mask = np.array([1, 1, 1, 1, 0])
  assert calibration.expected_calibration_error(probs, labels, mask, 4) == pytest.approx(0.35)
  assert calibration.negative_log_likelihood(probs, labels, mask) == pytest.approx(
      calibration.negative_log_likelihood(PROBS, LABELS))


def test_accumulating_batches_equals_one_pass():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 5)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  labels = rng.integers(0, 5, 50)
  stats = calibration.CalibrationStats(10)
  stats.update(probs[:20], labels[:20])
  stats.update(probs[20:], labels[20:])
  assert stats.ece == pytest.approx(calibration.expected_calibration_error(probs, labels, None, 10))
  assert stats.nll == pytest.approx(calibration.negative_log_likelihood(probs, labels))
  assert stats.total == 50


def test_episode_labels_follow_the_class_axis():
  labels = calibration.episode_labels((2, 3, 4, 3))
  assert labels.shape == (2, 3, 4)
  assert (labels[1, 2] == 2).all() and (labels[0, 0] == 0).all()


def test_reliability_diagram_writes_a_png(tmp_path):
  a, b = calibration.CalibrationStats(4), calibration.CalibrationStats(10)
  a.update(PROBS, LABELS)
  b.update(PROBS[::-1], LABELS)
  path = calibration.reliability_diagram({"a": a, "b": b}, str(tmp_path / "rel.png"))
  with open(path, "rb") as f:
    head = f.read(8)
  assert head == b"\x89PNG\r\n\x1a\n"
  assert (tmp_path / "rel.png").stat().st_size > 5000
