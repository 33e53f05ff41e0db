"""Test helpers for downloads without the internet: a tiny GGUF writer and a loopback HTTP server.

The server (127.0.0.1, a free port, one thread) serves byte strings by path, honours
``Range: bytes=K-`` (unless told not to), records every request, and can act as a PEP 503
"simple" package index so that ``pip download`` can be pointed at it with ``PIP_INDEX_URL``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def write_tiny_gguf(path: Path, *, chat_template: bool = True) -> bytes:
    """Write a small but valid GGUF model file (a few KB) and return its bytes."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("rainlocal test model")
    writer.add_context_length(256)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if chat_template:
        writer.add_chat_template("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.arange(64 * 16, dtype=np.float32).reshape(64, 16))
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def build_wheel(name: str, version: str, members: dict[str, bytes]) -> tuple[str, bytes]:
    """A minimal valid pure-Python wheel holding ``members``; returns (file name, bytes)."""
    dist = re.sub(r"[-_.]+", "_", name)
    filename = f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: rainlocal-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return filename, buf.getvalue()


class LoopbackServer:
    """Serve ``files`` over HTTP on 127.0.0.1; ``requests`` lists (path, Range header or None)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self._projects: dict[str, list[tuple[str, str]]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append((path, self.headers.get("Range")))
                data = server.files.get(path)
                if data is None and not path.endswith("/"):
                    data = server.files.get(path + "/")
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                content_type = "text/html" if path.startswith("/simple/") else "application/octet-stream"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def index_url(self) -> str:
        return self.url("/simple")

    def add_wheel(self, name: str, version: str, members: dict[str, bytes]) -> str:
        """Publish a wheel on the simple index; returns the 'name==version' spec to ask pip for."""
        filename, data = build_wheel(name, version, members)
        self.files[f"/files/{filename}"] = data
        normalized = re.sub(r"[-_.]+", "-", name).lower()
        links = self._projects.setdefault(normalized, [])
        links.append((filename, hashlib.sha256(data).hexdigest()))
        anchors = "".join(f'<a href="/files/{fn}#sha256={digest}">{fn}</a>\n' for fn, digest in links)
        self.files[f"/simple/{normalized}/"] = f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n".encode()
        return f"{name}=={version}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def pip_env(index_url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which pip sees only the loopback index (no user config, cache or find-links)."""
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("PIP_")}
    env.update(
        PIP_INDEX_URL=index_url,
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_RETRIES="0",
        PIP_TIMEOUT="10",
        PIP_NO_INPUT="1",
    )
    return env
