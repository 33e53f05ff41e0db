"""What a GGUF file is, read from its header alone, and whether it is whole.

``validate_gguf`` runs before every model load, so it has to be fast on a 1 GB file with a 150k-token
vocabulary: it walks the header with ``struct`` over an ``mmap`` (string arrays are skipped by their
length prefixes, fixed-size arrays in one step) and never touches the tensor data.
``gguf.GGUFReader`` builds a numpy view per vocabulary entry (seconds on real models) and fails on a
truncated file with a reshape error, so the ``gguf`` package is used here for its type tables only:
the byte size of every ggml tensor type and the names of the ``general.file_type`` values.

Every failure, whatever its cause, becomes a ``ModelError`` with one of three distinct messages:
the file is missing, it is not a GGUF file, or it is truncated (shorter than its own tensor table
says it must be).
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rainlocal.errors import ModelError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types (gguf.GGUFValueType): fixed sizes and struct codes of the scalars.
_SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING = 8
_ARRAY = 9

# Sanity bounds: a corrupt count must not make us loop for minutes before failing.
_MAX_COUNT = 1 << 32
_MAX_DIMS = 8


class _Short(Exception):
    """The header ends before a field it announces (the file is cut inside its header)."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class _Corrupt(Exception):
    """The header is inconsistent in a way truncation cannot explain."""


@dataclass
class _Tensor:
    name: str
    dims: tuple[int, ...]
    type_id: int
    offset: int  # relative to the start of the tensor data section


@dataclass
class _Header:
    version: int
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)  # scalars and strings, decoded
    array_lengths: dict[str, int] = field(default_factory=dict)  # arrays: only their length
    tensors: list[_Tensor] = field(default_factory=list)
    header_end: int = 0
    data_offset: int = 0


class _Cursor:
    """Bounds-checked little/big-endian reads over a byte buffer; running past the end raises _Short."""

    def __init__(self, buf: Any, size: int, endian: str = "<") -> None:
        self.buf = buf
        self.size = size
        self.pos = 0
        self.endian = endian

    def _need(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Short(self.pos + n)

    def scalar(self, code: str) -> Any:
        n = struct.calcsize(code)
        self._need(n)
        (value,) = struct.unpack_from(self.endian + code, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self) -> int:
        return self.scalar("I")

    def u64(self) -> int:
        return self.scalar("Q")

    def string(self) -> str:
        n = self.u64()
        self._need(n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.u64()
        self._need(n)
        self.pos += n


def _skip_array(cur: _Cursor, item_type: int, count: int) -> None:
    """Step over an array without building it (vocabularies have 150k entries)."""
    if item_type in _SCALARS:
        n = struct.calcsize(_SCALARS[item_type]) * count
        cur._need(n)
        cur.pos += n
    elif item_type == _STRING:
        for _ in range(count):
            cur.skip_string()
    elif item_type == _ARRAY:
        for _ in range(count):
            inner_type, inner_count = cur.u32(), cur.u64()
            _skip_array(cur, inner_type, inner_count)
    else:
        raise _Corrupt(f"unknown array item type {item_type}")


def _parse(buf: Any, size: int) -> _Header:
    """Walk magic, version, metadata and tensor infos; compute where the tensor data starts."""
    cur = _Cursor(buf, size)
    cur._need(4)
    cur.pos = 4
    version = cur.u32()
    if version & 0xFFFF == 0 and version != 0:  # written on a big-endian machine
        cur.endian = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (2, 3):
        raise _Corrupt(f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise _Corrupt(f"implausible counts ({n_tensors} tensors, {n_kv} metadata entries)")

    header = _Header(version=version, file_size=size)
    for _ in range(n_kv):
        key = cur.string()
        value_type = cur.u32()
        if value_type in _SCALARS:
            header.metadata[key] = cur.scalar(_SCALARS[value_type])
        elif value_type == _STRING:
            header.metadata[key] = cur.string()
        elif value_type == _ARRAY:
            item_type, count = cur.u32(), cur.u64()
            if count > _MAX_COUNT:
                raise _Corrupt(f"implausible array length {count} for {key}")
            _skip_array(cur, item_type, count)
            header.array_lengths[key] = count
        else:
            raise _Corrupt(f"unknown metadata value type {value_type} for {key}")

    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
        dims = tuple(cur.u64() for _ in range(n_dims))
        type_id = cur.u32()
        offset = cur.u64()
        header.tensors.append(_Tensor(name, dims, type_id, offset))

    header.header_end = cur.pos
    alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"invalid general.alignment {alignment!r}")
    header.data_offset = -(-cur.pos // alignment) * alignment
    return header


def _tensor_nbytes(tensor: _Tensor) -> int | None:
    """Bytes of one tensor's data, or None for a ggml type this ``gguf`` version does not know."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor.type_id)]
    except (ValueError, KeyError):
        return None
    n_elements = 1
    for d in tensor.dims:
        n_elements *= d
    return n_elements // block_size * type_size


def _required_size(header: _Header) -> int:
    """The smallest file size that holds every tensor the header describes."""
    end = header.header_end
    for tensor in header.tensors:
        nbytes = _tensor_nbytes(tensor)
        if nbytes is not None:
            end = max(end, header.data_offset + tensor.offset + nbytes)
    return end


def _read_header(path: str | os.PathLike[str]) -> _Header:
    """Parse and check a GGUF file, turning every failure into one of the distinct ModelErrors."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelError(f"{p} is a directory, not a GGUF file")
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 4 or f.read(4) != GGUF_MAGIC:
                raise ModelError(f"{p} is not a GGUF file (it does not start with the bytes 'GGUF')")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _parse(buf, size)
    except ModelError:
        raise
    except _Short as e:
        raise ModelError(f"{p} is truncated: expected at least {e.needed} bytes, found {size}") from None
    except _Corrupt as e:
        raise ModelError(f"{p} is not a valid GGUF file: {e}") from None
    except OSError as e:
        raise ModelError(f"cannot read {p}: {e.strerror or e}") from None
    except Exception as e:  # anything else on malformed input must still be one clear line
        raise ModelError(f"{p} is not a valid GGUF file: {type(e).__name__}: {e}") from None

    required = _required_size(header)
    if size < required:
        raise ModelError(f"{p} is truncated: expected at least {required} bytes, found {size}")
    return header


def validate_gguf(path: str | os.PathLike[str]) -> None:
    """Raise ModelError unless ``path`` is a complete GGUF file (header only; fast)."""
    _read_header(path)


def _quantization(header: _Header) -> str | None:
    """general.file_type as llama.cpp names it (Q4_1, Q4_K_M, ...), else the commonest matrix type."""
    from gguf.constants import GGMLQuantizationType, LlamaFileType

    file_type = header.metadata.get("general.file_type")
    if isinstance(file_type, int):
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            return f"file type {file_type}"
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    counts = Counter(t.type_id for t in header.tensors if len(t.dims) > 1)
    if not counts:
        return None
    type_id = counts.most_common(1)[0][0]
    try:
        return f"{GGMLQuantizationType(type_id).name} (guessed from tensor types)"
    except ValueError:
        return None


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary of a GGUF model for ``rainlocal models info``; raises ModelError like validate_gguf."""
    header = _read_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture")
    parameters = 0
    for tensor in header.tensors:
        n = 1
        for d in tensor.dims:
            n *= d
        parameters += n
    context_length = meta.get(f"{arch}.context_length") if arch else None
    template = meta.get("tokenizer.chat_template")
    return {
        "path": str(Path(path).resolve()),
        "file_size": header.file_size,
        "gguf_version": header.version,
        "architecture": arch,
        "name": meta.get("general.name"),
        "size_label": meta.get("general.size_label"),
        "parameters": parameters or None,
        "context_length": context_length if isinstance(context_length, int) else None,
        "quantization": _quantization(header),
        "has_chat_template": isinstance(template, str) and bool(template.strip()),
        "vocab_size": header.array_lengths.get("tokenizer.ggml.tokens"),
        "n_tensors": len(header.tensors),
    }


def file_identity(path: str | os.PathLike[str]) -> str:
    """Name, size and modification time of a model file: a cache key that changes when the file does
    (a judge-prefix state or a judge check saved for one file must not be used for another)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return p.name
    return f"{p.name}:{st.st_size}:{int(st.st_mtime)}"


def content_fingerprint(path: str | os.PathLike[str]) -> str:
    """A short name for a model file's content that survives copying and renaming: size plus a hash of
    its first 4 MiB (the GGUF header and metadata) and last 1 MiB (the last tensors). Probes fitted on
    one file are found for a copy of it, and never for a different quantisation or model."""
    p = Path(path).resolve()
    st = p.stat()
    return _fingerprint(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    """``content_fingerprint`` of one version of a file (keyed by size and modification time: an
    evaluation's start-up names the same model for its probes, its check cache and its shipped results)."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(4 << 20))
        if size > (5 << 20):
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:20]
