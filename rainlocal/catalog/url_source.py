"""``url`` sources: a plain http(s) download with urllib, resumed with an HTTP Range request.

An interrupted download leaves ``<file>.part`` behind and the next pull continues it where the
server allows (a 206 from the right offset), and starts over where it does not.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rainlocal import __version__
from rainlocal.catalog.entries import ModelEntry
from rainlocal.catalog.transfer import PullReporter, copy_hashing, hash_existing
from rainlocal.errors import DownloadError

_HTTP_TIMEOUT = 60.0


def fetch(entry: ModelEntry, part: Path, reporter: PullReporter) -> tuple[str, int]:
    """Download to ``part``, resuming a previous partial download when the server honours Range.

    Returns the sha256 and size of the whole ``part`` file.
    """
    url = entry.source["url"]
    offset = part.stat().st_size if part.is_file() else 0
    hasher = hashlib.sha256()
    if entry.size is not None and offset == entry.size:
        # Interrupted between the last byte and the rename: the leftover only needs checking.
        size = hash_existing(part, hasher, reporter)
        return hasher.hexdigest(), size
    if entry.size is not None and offset > entry.size:
        offset = 0  # oversized leftovers cannot be a prefix of the model: start afresh
    try:
        response = _open_resumable(url, offset)
        with response:
            resumed = offset > 0 and response.status == 206
            if entry.size is None:
                length = response.headers.get("Content-Length", "")
                reporter.set_total(int(length) + (offset if resumed else 0) if length.isdigit() else None)
            size = hash_existing(part, hasher, reporter) if resumed else 0
            with open(part, "ab" if resumed else "wb") as out:
                size += copy_hashing(response, out, hasher, reporter)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"cannot download '{entry.alias}': HTTP {e.code} {e.reason} from {url}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot download '{entry.alias}' from {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        kept = " (the partial file is kept; run the pull again to resume)" if part.exists() else ""
        raise DownloadError(f"download of '{entry.alias}' failed: {e or type(e).__name__}{kept}") from None
    return hasher.hexdigest(), size


def _open_url(url: str, offset: int) -> Any:
    headers = {"User-Agent": f"rainlocal/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_HTTP_TIMEOUT)


def _open_resumable(url: str, offset: int) -> Any:
    """Open ``url`` from byte ``offset``; falls back to the whole file when the server cannot resume.

    A 206 whose Content-Range starts elsewhere, or a 416, means the partial file cannot be continued;
    a plain 200 is the whole file (the caller sees status 200 and rewrites the .part from scratch).
    """
    if not offset:
        return _open_url(url, 0)
    try:
        response = _open_url(url, offset)
    except urllib.error.HTTPError as e:
        if e.code != 416:
            raise
        e.close()
        return _open_url(url, 0)
    if response.status == 206 and _range_start(response) != offset:
        response.close()
        return _open_url(url, 0)
    return response


def _range_start(response: Any) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None
