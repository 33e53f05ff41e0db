"""Hidden states out of the decodes the engine already makes (llama.cpp's eval callback).

Why: the latent judge reads the answering model's own residual stream (``l_out-N``, the output of
layer N) at the tokens of a partial answer. Those tokens were decoded anyway (drafts, candidates,
rollouts), so instead of a second pass the context's eval callback copies the chosen layers' rows
out of every ``llama_decode``, and a store keeps them by the token prefix they belong to: a token's
state depends only on the tokens before it, so ``hash(prefix)`` names it whatever branch decoded it.

llama.cpp calls the callback for every graph node (``ask=True``: "do you want this one?"), then again
with the computed tensor for the nodes we asked for; answering that second call with False makes the
scheduler skip the rest of the graph (``stop_early``: a reading that needs no logits). With nothing
wanted the callback answers at once; the cost of one Python call per node is measured in the README
("Latent judge").
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

#: Prefix hashes of a token list start from this value.
_SEED = 0x9E3779B9


def prefix_hashes(tokens: Sequence[int], seed: int = _SEED) -> list[int]:
    """``h[i]`` names ``tokens[:i+1]``: a running hash, so one pass names every prefix."""
    out = []
    h = seed
    for t in tokens:
        h = hash((h, int(t)))
        out.append(h)
    return out


@contextmanager
def callback_interrupts() -> Iterator[list]:
    """Catch a KeyboardInterrupt raised inside the eval callback while llama.cpp runs.

    Why: during ``llama_decode`` Python's signal handlers run only when the callback is entered, so a
    Ctrl-C (or a handler that raises KeyboardInterrupt, as an eval worker's SIGTERM does) is raised at
    the callback's first line, where no ``try`` can catch it; ctypes then reports it as unraisable and
    returns 0, and the interrupt would be lost. The list it yields collects such interrupts (other
    unraisable exceptions go on to the previous hook); the engine raises KeyboardInterrupt again once
    the decode has returned."""
    caught: list = []
    previous = sys.unraisablehook

    def hook(unraisable) -> None:  # noqa: ANN001
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            caught.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield caught
    finally:
        sys.unraisablehook = previous


def _ggml_base():
    """libggml-base from llama-cpp-python's own library folder (it exports ``ggml_get_name`` and
    ``ggml_backend_tensor_get``); None where it cannot be found."""
    import llama_cpp

    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for pattern in ("libggml-base.so*", "libggml-base.dylib", "ggml-base.dll", "libggml.so*"):
        for path in sorted(glob.glob(os.path.join(lib_dir, pattern))):
            try:
                lib = ctypes.CDLL(path)
                lib.ggml_get_name.restype = ctypes.c_void_p  # the name's address: read in place
                lib.ggml_get_name.argtypes = [ctypes.c_void_p]
                lib.ggml_nelements.restype = ctypes.c_int64
                lib.ggml_nelements.argtypes = [ctypes.c_void_p]
                lib.ggml_backend_tensor_get.restype = None
                lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                                        ctypes.c_size_t]
                return lib
            except (OSError, AttributeError):
                continue
    return None


class HiddenCapture:
    """The eval callback of one context plus the store of captured rows.

    ``want(layers)`` says which layers to copy from now on (an empty set: none, the callback answers
    "no" to every node). After each ``llama_decode`` the engine calls ``take(entries_hashes)`` with
    the prefix hash of every token of the batch, in batch order, and the rows are stored under them.
    """

    def __init__(self, n_embd: int, n_layer: int, max_rows: int = 60000):
        import llama_cpp

        self.n_embd = int(n_embd)
        self.n_layer = int(n_layer)
        self.max_rows = int(max_rows)
        self._lib = _ggml_base()
        self.available = self._lib is not None
        self.layers: tuple[int, ...] = ()
        self._names: dict[bytes, int] = {}
        self._got: dict[int, np.ndarray] = {}
        self._store: OrderedDict[int, np.ndarray] = OrderedDict()
        self._name_off: int | None = None
        #: Stop the graph once the deepest wanted layer is copied (``LlamaEngine.read_states``).
        self.stop_early = False
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    # ---- what to capture ------------------------------------------------------------------
    def want(self, layers: Sequence[int]) -> None:
        """Capture these layers' outputs from the next decode on (rows stored earlier for other
        layers are dropped: a row holds exactly the wanted layers, in order)."""
        layers = tuple(sorted({int(x) for x in layers}))
        if layers != self.layers:
            self._store.clear()
        bad = [x for x in layers if not 0 <= x < self.n_layer]
        if bad:
            raise ValueError(f"layer {bad[0]} out of range (the model has {self.n_layer} layers)")
        self.layers = layers
        self._names = {f"l_out-{x}".encode(): i for i, x in enumerate(layers)}

    @property
    def active(self) -> bool:
        return bool(self.layers) and self.available

    # ---- the callback -------------------------------------------------------------------------
    def _name(self, t: int) -> bytes:
        if self._name_off is None:
            # the offset of ``name`` in ggml_tensor, found once from the library's own accessor
            self._name_off = int(self._lib.ggml_get_name(t)) - int(t)
        return ctypes.string_at(t + self._name_off, 12)

    def _on_node(self, t, ask, _user) -> bool:
        # (A KeyboardInterrupt raised here, where Python runs its signal handlers during llama_decode, is
        # left to ctypes: ``callback_interrupts`` catches it and the engine raises it after the decode.)
        if not self._names:
            return False if ask else True
        try:
            name = self._name(t).split(b"\0", 1)[0]
            idx = self._names.get(name)
            if ask:
                return idx is not None
            if idx is not None:
                n = int(self._lib.ggml_nelements(t))
                rows = n // self.n_embd
                buf = np.empty((rows, self.n_embd), dtype=np.float32)
                self._lib.ggml_backend_tensor_get(t, buf.ctypes.data, 0, buf.nbytes)
                self._got[idx] = buf
                if self.stop_early and idx == len(self.layers) - 1:
                    return False  # llama.cpp's scheduler skips the rest of the graph
            return True
        except Exception:  # never let an error cross into C
            return False if ask else True

    # ---- after a decode -------------------------------------------------------------------
    def take(self, hashes: Sequence[int]) -> None:
        """Store the rows of the decode that just ran under ``hashes`` (one per batch token)."""
        got, self._got = self._got, {}
        if not self.layers or len(got) != len(self.layers):
            return
        n = len(hashes)
        if any(g.shape[0] != n for g in got.values()):
            return  # a layer whose rows were cut to the output tokens: nothing reliable to store
        stacked = np.stack([got[i] for i in range(len(self.layers))], axis=1).astype(np.float16)
        store = self._store
        for j, h in enumerate(hashes):
            store[h] = stacked[j]
            store.move_to_end(h)
        while len(store) > self.max_rows:
            store.popitem(last=False)

    def rows(self, hashes: Sequence[int]) -> list[np.ndarray | None]:
        """Stored rows (``[n_wanted_layers, n_embd]`` float16) by prefix hash, None where missing."""
        return [self._store.get(h) for h in hashes]

    def forget(self) -> None:
        self._store.clear()
        self._got = {}
