"""Kept so that config.gin files saved by earlier runs (``import leo_tf.backbone.strategy``)
still parse; the strategy lives in leo_tf.runtime.strategy."""

from leo_tf.runtime.strategy import make_strategy  # pylint: disable=unused-import
