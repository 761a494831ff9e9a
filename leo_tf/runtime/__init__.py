"""Process-level concerns shared by backbone pre-training and meta-training.

``strategy`` (the tf.distribute strategy), ``threads`` (TF's CPU thread pools),
``files`` (atomic writes), ``paths`` (``$LEO_TF_DATA`` and absolute paths),
``quiet_start`` (TensorFlow without its noise lines), ``lock`` (one writer per output
directory), ``outputs`` (output paths checked before any work) and ``rundir`` (every
path of a run directory).
"""
