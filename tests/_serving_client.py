"""Runs requests against an exported LEO the way a server would, without leo_tf.

  python tests/_serving_client.py <export_dir> <requests.npz> <out.npz>

``requests.npz`` holds, per request ``r``, arrays ``r/<signature input>`` and
``r/_signature`` (a string). Each request runs on two paths: tf.saved_model.load (TF2)
and the TF1 Session loader that TF Serving and saved_model_cli use; on the latter it goes
as TF Serving gets it, a tensorflow-serving-api PredictRequest whose TensorProtos are
fed, and comes back as a PredictResponse. ``out.npz`` gets ``r/tf2/<output>`` and
``r/session/<output>``, or ``.../error`` with the message.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_pb2, predict_pb2  # pylint: disable=g-import-not-at-top


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


def predict_request(req):
  """The request as a TF Serving client sends it."""
  request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
      name="leo", signature_name=str(req["_signature"])))
  for key, value in req.items():
    if key != "_signature":
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return request


def predict(sess, meta, request):
  """A PredictRequest answered the way TF Serving's predictor does on a Session."""
  sig = meta.signature_def[request.model_spec.signature_name]
  feeds = {sig.inputs[k].name: tf.make_ndarray(v) for k, v in request.inputs.items()}
  keys = sorted(sig.outputs)
  values = sess.run([sig.outputs[k].name for k in keys], feeds)
  response = predict_pb2.PredictResponse()
  for k, v in zip(keys, values):
    response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
  return response


def run_session(export_dir, requests):
  out = {}
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    for name, req in requests.items():
      try:
        response = predict(sess, meta, predict_request(req))
        for k, v in response.outputs.items():
          out[f"{name}/session/{k}"] = tf.make_ndarray(v)
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
