"""Runs requests against an exported LEO the way a server would, without leo_tf.

  python tests/_serving_client.py <export_dir> <requests.npz> <out.npz>

``requests.npz`` holds, per request ``r``, arrays ``r/<signature input>`` and
``r/_signature`` (a string). Each request runs on two paths: tf.saved_model.load (TF2)
and the TF1 Session loader that TF Serving and saved_model_cli use. ``out.npz`` gets
``r/tf2/<output>`` and ``r/session/<output>``, or ``.../error`` with the message.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top


def group(requests):
  out = {}
  for key in requests.files:
    name, field = key.split("/", 1)
    out.setdefault(name, {})[field] = requests[key]
  return out


def run_tf2(export_dir, requests):
  loaded = tf.saved_model.load(export_dir)
  out = {}
  for name, req in requests.items():
    fn = loaded.signatures[str(req["_signature"])]
    inputs = {k: tf.constant(v) for k, v in req.items() if k != "_signature"}
    try:
      for k, v in fn(**inputs).items():
        out[f"{name}/tf2/{k}"] = v.numpy()
    except Exception as e:  # pylint: disable=broad-except
      out[f"{name}/tf2/error"] = np.array(str(e))
  return out


def run_session(export_dir, requests):
  out = {}
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    for name, req in requests.items():
      sig = meta.signature_def[str(req["_signature"])]
      feeds = {sig.inputs[k].name: v for k, v in req.items() if k != "_signature"}
      keys = sorted(sig.outputs)
      try:
        values = sess.run([sig.outputs[k].name for k in keys], feeds)
        for k, v in zip(keys, values):
          out[f"{name}/session/{k}"] = v
      except Exception as e:  # pylint: disable=broad-except
        out[f"{name}/session/error"] = np.array(str(e))
  return out


def main(export_dir, requests_path, out_path):
  requests = group(np.load(requests_path))
  out = run_tf2(export_dir, requests)
  out.update(run_session(export_dir, requests))
  out["leo_tf_imported"] = np.array(any(m.startswith("leo_tf") for m in sys.modules))
  np.savez(out_path, **out)


if __name__ == "__main__":
  main(*sys.argv[1:4])
