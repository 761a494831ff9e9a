"""The measured targets, on synthetic L2-normalised 640-d embeddings (600 per class) at
the authors' final-code settings, through leo_tf's public functions."""

import os
import tempfile
import time

from leo_bench.flops import graph_flops
from leo_bench.floor import floor_ms, ms_per_call, timed_rate

TARGETS = {
    "train1": ("meta-training 5-way 1-shot", "episodes/s", ">=", 1500.0),
    "train5": ("meta-training 5-way 5-shot", "episodes/s", ">=", 400.0),
    "eval": ("evaluation, 10,000 episodes, 600-K queries", "s", "<=", 60.0),
    "serve": ("serving p99, 5-way 1-shot, 75 queries", "ms", "<=", 10.0),
    "stream": ("stream of single queries, 5-way 5-shot: classify p99", "ms", "<=", 1.0),
    "e2e_plan": ("end-to-end LEO on GPUs: WRN-28-10 at 80 px, a plan", "", "", 0.0),
    "e2e": ("the outer step, frozen vs end-to-end LEO", "ms", "", 0.0),
}
DIM, PER_CLASS = 640, 600


def synthetic_set(num_classes: int, seed: int, dim: int = DIM, per_class: int = PER_CLASS):
  """``num_classes`` x ``per_class`` L2-normalised embeddings around random class means."""
  import numpy as np
  from leo_tf.data.embeddings import EmbeddingSet
  rng = np.random.default_rng(seed)
  ids = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  centers = rng.normal(size=(num_classes, dim)).astype(np.float32)
  x = centers[ids] * 0.3 + rng.normal(size=(ids.size, dim)).astype(np.float32)
  names = [f"s{seed}c{c:03d}" for c in range(num_classes)]
  keys = np.array([f"{i}-{names[c]}-x.JPEG" for i, c in enumerate(ids)])
  return EmbeddingSet(x, ids, names, keys).l2_normalized()


def model_config(shots: int, args):
  from leo_tf.leo.config import LEOConfig
  return LEOConfig(num_classes=5, num_shots=shots, inner_gradients=args.inner_gradients)


def leo_trainer(shots: int, args, out: str, train=None, **end_to_end):
  """The MetaTrainer the training targets time, writing into ``out``: meta-batch 12 on
  ``train`` (default: 64 synthetic 640-d classes), without validation; ``end_to_end``
  (``end_to_end=EndToEnd(...)``) makes it end-to-end LEO."""
  from leo_tf.leo.config import TrainConfig
  from leo_tf.leo.trainer import MetaTrainer
  groups = {} if args.task_groups is None else dict(task_groups=args.task_groups)
  train_config = TrainConfig(jit_compile=args.xla, meta_batch_size=12, **groups)
  return MetaTrainer(model_config(shots, args), train_config,
                     synthetic_set(64, 1) if train is None else train, None, out,
                     log=lambda *_: None, **end_to_end)


def bench_train(shots: int, args) -> dict:
  with tempfile.TemporaryDirectory() as out:
    trainer = leo_trainer(shots, args, out)
    compile_start = time.perf_counter()
    trainer.train_step()
    compile_s = time.perf_counter() - compile_start
    for _ in range(5):
      trainer.train_step()

    def one_step():
      return 1 if trainer.train_step() else 0     # as MetaTrainer.train runs it

    rates = timed_rate(one_step, args.seconds, args.repeats)
    graph = trainer.step_function.get_concrete_function().graph
    flops = graph_flops(graph)
    traces = trainer.step_function.experimental_get_tracing_count()
    profile = train_profile(trainer, args.seconds / 2)
    floor = floor_ms(graph, args.seconds / 2)
  best = max(rates)
  return dict(value=best * 12, all=[r * 12 for r in rates], steps_per_s=best,
              flops_per_call=flops, calls_per_s=best, compile_s=compile_s, traces=traces,
              profile=profile, floor=floor)


def train_profile(trainer, seconds):
  """Milliseconds per call of the pieces of a step: sampling, forward, forward+backward
  (each its own tf.function; in the step they run in one graph)."""
  import tensorflow as tf
  model, step = trainer.model, tf.constant(0, tf.int64)
  sample = tf.function(trainer.replica_batch)
  batch = sample(step)
  seed = tf.constant([1, 2], tf.int64)

  @tf.function
  def forward(b):
    return model(b, training=True, seed=seed)["query_loss"]

  @tf.function
  def backward(b):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(model(b, training=True, seed=seed)["query_loss"])
    return tape.gradient(loss, model.trainable_variables)[0]

  return dict(sample_ms=ms_per_call(lambda: sample(step)["support"], seconds),
              forward_ms=ms_per_call(lambda: forward(batch), seconds),
              forward_backward_ms=ms_per_call(lambda: backward(batch), seconds))


def bench_eval(args) -> dict:
  from leo_tf.data.episodes import EpisodeSampler
  from leo_tf.leo import evaluation
  from leo_tf.leo.model import build_leo
  model = build_leo(model_config(1, args), DIM)
  sampler = EpisodeSampler(synthetic_set(20, 3), 5, 1, None)
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    result = evaluation.evaluate(model, sampler, args.eval_episodes, args.eval_batch, seed=1)
    times.append(time.perf_counter() - start)
  scale = 10000 / args.eval_episodes
  # FLOPs of one batch of evaluation's own traced function. Its grouped query-logit
  # product has a data-dependent group size, so the graph count misses it: add the
  # useful part analytically (every class example x N weights).
  stream = sampler.support_dataset if sampler.all_queries else sampler.dataset
  spec = stream(args.eval_batch, 0).element_spec
  graph = evaluation.predictor(model, sampler).get_concrete_function(spec).graph
  flops = graph_flops(graph) + 2 * args.eval_batch * 5 * PER_CLASS * DIM * 5
  best = min(times) * scale
  return dict(value=best, all=[t * scale for t in times], accuracy=result.mean,
              flops_per_call=flops, calls_per_s=(10000 / args.eval_batch) / best,
              episodes=args.eval_episodes, batch=args.eval_batch)


def bench_serve(args) -> dict:
  """p99 latency of the exported serving_default signature, reloaded."""
  import numpy as np
  import tensorflow as tf
  from leo_tf.leo.model import build_leo
  from leo_tf.serving import export
  model = build_leo(model_config(1, args), DIM)
  x = synthetic_set(5, 4).embeddings.reshape(5, PER_CLASS, DIM)
  support = tf.constant(x[:, 0])                                   # [N*K, d], K = 1
  labels = tf.range(5, dtype=tf.int64)
  query = tf.constant(x[:, 1:16].reshape(75, DIM))                 # 15 queries a class
  with tempfile.TemporaryDirectory() as out:
    path = export.write_export(model, os.path.join(out, "1"), normalize=True)
    served = tf.saved_model.load(path).signatures[export.SERVING_DEFAULT]
    request = lambda: served(support_embeddings=support, support_labels=labels,
                             query_embeddings=query)
    for _ in range(20):
      request()
    latencies = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      while time.perf_counter() - start < args.seconds:
        t = time.perf_counter()
        {k: v.numpy() for k, v in request().items()}
        latencies.append(1000.0 * (time.perf_counter() - t))
  lat = np.array(latencies)
  return dict(value=float(np.percentile(lat, 99)), p50=float(np.percentile(lat, 50)),
              mean=float(lat.mean()), requests=int(lat.size),
              how="exported SavedModel (serving_default, reloaded)",
              flops_per_call=graph_flops(served.graph) or served_flops(model),
              calls_per_s=1000.0 / float(lat.mean()))


def served_flops(model):
  """FLOPs of the served computation traced in process (a reloaded signature hides
  its body): serving.graph.classify on one 5-way 1-shot task with 75 queries."""
  import tensorflow as tf
  from leo_tf.serving import graph
  classify = tf.function(lambda support, query: graph.classify(
      model, support, tf.ones(tf.shape(support)[:3]), query))
  return graph_flops(classify.get_concrete_function(
      tf.TensorSpec([1, 5, 1, model.dim]), tf.TensorSpec([75, model.dim])).graph)
