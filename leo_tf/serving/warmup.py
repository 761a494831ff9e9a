"""TF Serving warm-up records (``assets.extra/tf_serving_warmup_requests``).

TF Serving replays these PredictionLog protos when it loads a version, so the first
real request does not pay for graph optimisation and memory allocation. The protos live
in the ``tensorflow-serving-api`` package, which depends on the full ``tensorflow``
package (not ``tensorflow-cpu``), so we declare the few messages we write ourselves,
with the field numbers of tensorflow_serving/apis/{prediction_log,predict,model}.proto,
in a private descriptor pool (no clash if the real package is imported too). Their
serialised bytes are what the real classes would write and read.
"""

import functools
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2

WARMUP_FILE = "tf_serving_warmup_requests"
_PROTO_FILE = "leo_tf/serving/prediction_log_subset.proto"

_F = descriptor_pb2.FieldDescriptorProto


def _field(message, name: str, number: int, kind, type_name: str = "", repeated=False):
  field = message.field.add(name=name, number=number, type=kind,
                            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if type_name:
    field.type_name = type_name


def _add_with_dependencies(pool, file_descriptor, seen):
  """Copies a generated file (and what it imports) from the default pool into ``pool``."""
  if file_descriptor.name in seen:
    return
  for dependency in file_descriptor.dependencies:
    _add_with_dependencies(pool, dependency, seen)
  proto = descriptor_pb2.FileDescriptorProto()
  file_descriptor.CopyToProto(proto)
  pool.Add(proto)
  seen.add(file_descriptor.name)


@functools.lru_cache(maxsize=None)
def messages() -> Dict[str, type]:
  """Message classes: PredictionLog, PredictLog, PredictRequest, ModelSpec, TensorProto."""
  pool = descriptor_pool.DescriptorPool()
  _add_with_dependencies(pool, tensor_pb2.DESCRIPTOR, set())
  f = descriptor_pb2.FileDescriptorProto(name=_PROTO_FILE, package="tensorflow.serving",
                                         syntax="proto3")
  f.dependency.append(tensor_pb2.DESCRIPTOR.name)
  spec = f.message_type.add(name="ModelSpec")
  _field(spec, "name", 1, _F.TYPE_STRING)
  _field(spec, "signature_name", 3, _F.TYPE_STRING)
  request = f.message_type.add(name="PredictRequest")
  entry = request.nested_type.add(name="InputsEntry")
  entry.options.map_entry = True
  _field(entry, "key", 1, _F.TYPE_STRING)
  _field(entry, "value", 2, _F.TYPE_MESSAGE, ".tensorflow.TensorProto")
  _field(request, "model_spec", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.ModelSpec")
  _field(request, "inputs", 2, _F.TYPE_MESSAGE,
         ".tensorflow.serving.PredictRequest.InputsEntry", repeated=True)
  _field(request, "output_filter", 3, _F.TYPE_STRING, repeated=True)
  log = f.message_type.add(name="PredictLog")
  _field(log, "request", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest")
  prediction_log = f.message_type.add(name="PredictionLog")
  _field(prediction_log, "predict_log", 6, _F.TYPE_MESSAGE, ".tensorflow.serving.PredictLog")
  pool.Add(f)
  names = dict(PredictionLog="tensorflow.serving.PredictionLog",
               PredictLog="tensorflow.serving.PredictLog",
               PredictRequest="tensorflow.serving.PredictRequest",
               ModelSpec="tensorflow.serving.ModelSpec",
               TensorProto="tensorflow.TensorProto")
  return {k: message_factory.GetMessageClass(pool.FindMessageTypeByName(v))
          for k, v in names.items()}


def prediction_log(inputs: Mapping[str, np.ndarray], signature_name: str,
                   model_name: str = "leo") -> bytes:
  """One serialised PredictionLog holding a PredictRequest with ``inputs``."""
  m = messages()
  request = m["PredictRequest"](
      model_spec=m["ModelSpec"](name=model_name, signature_name=signature_name))
  for key, value in inputs.items():
    request.inputs[key].ParseFromString(tf.make_tensor_proto(value).SerializeToString())
  return m["PredictionLog"](predict_log=m["PredictLog"](request=request)).SerializeToString()


def write(path: str, requests: Iterable[Tuple[str, Mapping[str, np.ndarray]]],
          model_name: str = "leo") -> int:
  """Writes (signature_name, inputs) pairs as a TFRecord of PredictionLogs; returns count."""
  count = 0
  with tf.io.TFRecordWriter(path) as writer:
    for signature_name, inputs in requests:
      writer.write(prediction_log(inputs, signature_name, model_name))
      count += 1
  return count


def read(path: str):
  """(model_spec.signature_name, {input: np.ndarray}) of every record: for tests/tools."""
  m = messages()
  out = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    log = m["PredictionLog"].FromString(record)
    request = log.predict_log.request
    inputs = {k: tf.make_ndarray(tensor_pb2.TensorProto.FromString(v.SerializeToString()))
              for k, v in request.inputs.items()}
    out.append((request.model_spec.signature_name, inputs))
  return out
