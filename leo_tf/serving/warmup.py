"""TF Serving warm-up records (``assets.extra/tf_serving_warmup_requests``).

TF Serving replays these PredictionLog protos when it loads a version, so the first
real request does not pay for graph optimisation and memory allocation. The messages
are tensorflow-serving-api's own.
"""

from typing import Iterable, Mapping, Tuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = "tf_serving_warmup_requests"


def prediction_log(inputs: Mapping[str, np.ndarray], signature_name: str) -> bytes:
  """One serialised PredictionLog holding a PredictRequest with ``inputs``."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name="leo", signature_name=signature_name))
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  return log.SerializeToString()


def write(path: str, requests: Iterable[Tuple[str, Mapping[str, np.ndarray]]]) -> None:
  """Writes (signature_name, inputs) pairs as a TFRecord of PredictionLogs."""
  with tf.io.TFRecordWriter(path) as writer:
    for signature_name, inputs in requests:
      writer.write(prediction_log(inputs, signature_name))


def read(path: str):
  """(model_spec.signature_name, {input: np.ndarray}) of every record: for tests/tools."""
  out = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    out.append((request.model_spec.signature_name, inputs))
  return out
