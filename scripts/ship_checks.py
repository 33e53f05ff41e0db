"""Turn the check results of catalogue models, made by ``rainlocal eval`` in a fresh home, into the files
that ship in ``rainlocal/evals/data/checks/`` (``rainlocal.evals.shipped``).

    RAINLOCAL_HOME=/tmp/fresh rainlocal eval xstest --limit 1 --recheck ...   # per judge / answering model
    python scripts/ship_checks.py /tmp/fresh/cache/eval-checks

Only caches with a portable identity (a local model file) are written; a shipped file's records are kept
and those read now added or replaced. Why ship them at all, and how a run verifies them before it uses
them: ``rainlocal/evals/shipped.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rainlocal.evals import shipped
from rainlocal.evals.records import read_records


def main(cache_dir: str) -> None:
    for side in sorted(Path(cache_dir).glob("*.identity.json")):
        meta = json.loads(side.read_text(encoding="utf-8"))
        if not meta.get("portable"):
            continue
        cache = side.with_name(side.name.replace(".identity.json", ".jsonl"))
        fresh = {r["id"]: r for r in read_records(cache, repair=False)
                 if r.get("kind") in ("check", "self_check") and not r.get("shipped")}
        out = shipped.shipped_path(meta["portable"])
        rows = {**shipped.load(out), **fresh}
        n = shipped.write(out, list(rows.values()))
        print(f"{out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}: {n} records "
              f"({len(fresh)} from {cache.name})")


if __name__ == "__main__":
    main(sys.argv[1])
