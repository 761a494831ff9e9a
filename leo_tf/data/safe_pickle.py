"""Unpickling embedding files without running code or trusting their size claims.

A pickle is a program: it may call any importable function. This unpickler resolves
only the few globals that numpy arrays of today and of Python 2 need (protocols 0-5),
and each of those is a checked stand-in:

- every array an opcode asks for is charged against a byte budget, the size of the
  file: a 33 KB file may not allocate a 16384 x 16384 array, nor copy one buffer a
  million times through the memo;
- dtypes are plain numbers, strings or objects (no fields, no sub-arrays, no void);
- object arrays hold exactly as many (already unpickled, hence plain) items as their
  shape claims (numpy itself crashes on a short list).
"""

import io
import math
import pickle
from typing import Any

import numpy as np

# Element kinds an embeddings file uses: bool, ints, floats, bytes, str, object (keys).
_KINDS = frozenset("biufSUO")


class RefusedPickle(pickle.UnpicklingError):
  """The pickle asks for something an embeddings file never needs."""


class _Budget:
  """Bytes the arrays and byte strings of one file may take in total.

  Each byte of a legitimate file is materialised at most twice (protocols 0-2 rebuild
  an array's data as a byte string, then copy it into the array), plus slack for tiny
  files.
  """

  def __init__(self, file_size: int):
    self.file_size = file_size
    self.left = 2 * file_size + (1 << 16)

  def charge(self, nbytes: int, what: str):
    if nbytes > self.left:
      raise RefusedPickle(
          f"{what} claims {nbytes:,} bytes, more than a {self.file_size:,}-byte file can "
          "hold; the file is corrupt or hostile")
    self.left -= nbytes


def _plain_dtype(dtype) -> np.dtype:
  if not isinstance(dtype, (np.dtype, str, bytes)):
    raise RefusedPickle(f"dtype {dtype!r} is not a plain dtype")
  try:
    dtype = np.dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
  except TypeError as e:
    raise RefusedPickle(f"unknown dtype {dtype!r}") from e
  if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
    raise RefusedPickle(f"dtype {dtype} is not a plain number, string or object dtype")
  return dtype


def _shape(shape) -> tuple:
  if not isinstance(shape, (tuple, list)) or not all(
      isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
    raise RefusedPickle(f"array shape {shape!r} is not a tuple of non-negative integers")
  return tuple(shape)


def _nbytes(shape: tuple, dtype: np.dtype) -> int:
  # Object items are charged a byte each: the file spends at least that per item.
  return math.prod(shape) * (1 if dtype.kind == "O" else dtype.itemsize)


class _Unpickler(pickle.Unpickler):
  """Admits numpy arrays, dicts, lists, tuples, strings and numbers, within a budget."""

  def __init__(self, data: bytes):
    super().__init__(io.BytesIO(data), encoding="latin1")
    budget = _Budget(len(data))

    class CheckedArray(np.ndarray):
      """What ``numpy.ndarray`` resolves to: its state is checked before numpy sees it."""

      def __new__(cls, *args, **kwargs):
        raise RefusedPickle("refusing to call numpy.ndarray directly")

      def __reduce__(self):
        return np.ndarray.__reduce__(self.view(np.ndarray))

      def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
          raise RefusedPickle("malformed array state")
        shape, dtype, data = _shape(state[-4]), _plain_dtype(state[-3]), state[-1]
        budget.charge(_nbytes(shape, dtype), f"an array of shape {shape} and dtype {dtype}")
        if dtype.kind == "O":
          if not isinstance(data, list) or len(data) != math.prod(shape):
            raise RefusedPickle(f"an object array of shape {shape} holds "
                                f"{len(data) if isinstance(data, list) else 'no list of'} "
                                "items")
        # Python 2 wrote the data as str; read with latin1 it is text, one char a byte.
        elif not isinstance(data, (bytes, bytearray, str)) or len(data) != _nbytes(shape, dtype):
          raise RefusedPickle(f"the data of an array of shape {shape} and dtype {dtype} "
                              "has the wrong size")
        super().__setstate__(state)

    def reconstruct(subtype, shape, dtype):
      """numpy's ``_reconstruct``: an empty array that BUILD then fills."""
      if subtype is not CheckedArray:
        raise RefusedPickle("_reconstruct of something other than numpy.ndarray")
      shape, dtype = _shape(shape), _plain_dtype(dtype)
      budget.charge(_nbytes(shape, dtype), f"an array of shape {shape}")
      return np.ndarray.__new__(CheckedArray, shape, dtype)

    def frombuffer(buffer, dtype, shape, order="C"):
      """numpy's protocol-5 ``_frombuffer``: a view of in-band bytes, of the claimed size."""
      shape, dtype = _shape(shape), _plain_dtype(dtype)
      if dtype.kind == "O" or not isinstance(buffer, (bytes, bytearray)):
        raise RefusedPickle("_frombuffer without an in-band byte buffer")
      if len(buffer) != _nbytes(shape, dtype):
        raise RefusedPickle(f"a buffer of {len(buffer)} bytes for an array of shape {shape} "
                            f"and dtype {dtype}")
      budget.charge(len(buffer), f"an array of shape {shape}")
      if order not in ("C", "F"):
        raise RefusedPickle(f"array order {order!r}")
      return np.frombuffer(buffer, dtype).reshape(shape, order=order)

    def scalar(dtype, data=None):
      dtype = _plain_dtype(dtype)
      if dtype.kind == "O":
        return data
      if isinstance(data, str):  # Python 2's str, read with latin1
        data = data.encode("latin1")
      if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise RefusedPickle(f"a {dtype} scalar from {len(data or b'')} bytes")
      return np.frombuffer(data, dtype)[0]

    def encode(text, encoding="latin1"):
      """``_codecs.encode``: how protocols 0-2 rebuild bytes (each call copies its text)."""
      if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") \
          not in ("latin1", "iso88591"):
        raise RefusedPickle(f"refusing _codecs.encode with encoding {encoding!r}")
      budget.charge(len(text), "a byte string")
      return text.encode("latin1")

    def empty_bytes(*args):
      """``bytes()``: protocols 0-2 write b'' so (an empty array's data); nothing else."""
      if args:
        raise RefusedPickle("refusing bytes() with arguments")
      return b""

    self._globals = {}
    for core in ("numpy.core", "numpy._core"):
      self._globals[(f"{core}.multiarray", "_reconstruct")] = reconstruct
      self._globals[(f"{core}.multiarray", "scalar")] = scalar
      self._globals[(f"{core}.numeric", "_frombuffer")] = frombuffer
    self._globals.update({
        ("numpy", "ndarray"): CheckedArray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): encode,
        ("__builtin__", "bytes"): empty_bytes,
        ("builtins", "bytes"): empty_bytes,
    })
    self.array_type = CheckedArray

  def find_class(self, module, name):
    try:
      return self._globals[(module, name)]
    except KeyError:
      raise RefusedPickle(
          f"refusing to load '{module}.{name}': embedding pickles may only hold numpy "
          "arrays, dicts, lists, strings and numbers") from None

  def persistent_load(self, pid):
    raise RefusedPickle("refusing a persistent reference")


def _plain(value, array_type):
  """``value`` with the checked arrays in its dicts and lists turned back into plain
  ndarrays, in place: each container is visited once (the memo can share them)."""
  seen, todo = set(), [value]
  while todo:
    node = todo.pop()
    if id(node) in seen or not isinstance(node, (dict, list)):
      continue
    seen.add(id(node))
    for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
      if isinstance(v, array_type):
        node[k] = v.view(np.ndarray)
      else:
        todo.append(v)
  return value.view(np.ndarray) if isinstance(value, array_type) else value


def loads(data: bytes) -> Any:
  """Unpickles ``data`` (Python 2 or 3, protocols 0-5), admitting only plain data.

  Raises ``pickle.UnpicklingError`` (``RefusedPickle`` for what is not allowed) for any
  bad input; nothing in the file runs.
  """
  unpickler = _Unpickler(data)
  try:
    return _plain(unpickler.load(), unpickler.array_type)
  except RefusedPickle as e:
    raise RefusedPickle(f"refused pickle: {e}") from e
  except RecursionError as e:
    raise pickle.UnpicklingError("corrupt pickle: nested too deeply") from e
  except MemoryError as e:
    raise pickle.UnpicklingError("corrupt pickle: it asks for more memory than there is") from e
  except Exception as e:  # truncated or corrupt streams raise many different types
    raise pickle.UnpicklingError(
        f"corrupt or truncated pickle: {type(e).__name__}: {e}") from e
