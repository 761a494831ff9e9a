"""Process-level concerns shared by backbone pre-training and meta-training.

``strategy`` (the tf.distribute strategy), ``threads`` (TF's CPU thread pools),
``seeds`` (process-wide random seeds and op determinism) and ``files`` (atomic writes).
"""
