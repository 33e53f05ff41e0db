"""Fit probes from states cached by scripts/probe_experiment.py, with the own replies' labels read from a
CSV (prompt_id,reply,complied), print the cross-validated measures, and optionally save the probes.

    python scripts/probe_fit.py FEATURES.npz LABELS.csv [MODEL_PATH OUT.npz]

``DIALOGUES=STATES.npz`` adds the labelled HH conversations (``latent.data.hh_requests``): request states
at the same layers, one row per conversation (arrays ``states`` [n, layers, d] and ``ids``; other rows
in the file, e.g. kind != "hh", are ignored), measured and cross-fitted like the XSTest prompts.
"""
import csv
import json
import os
import sys
import time

import numpy as np

from rainlocal.latent import data
from rainlocal.latent.data import Prompt, Reply
from rainlocal.latent.features import CaseStates
from rainlocal.latent.fit import Tables, choose, cross_validate, fit_final

z = np.load(sys.argv[1])
labels = {r["prompt_id"]: r["complied"].strip() == "1" for r in csv.DictReader(open(sys.argv[2], encoding="utf-8"))}
prompts = [Prompt(**p) for p in json.loads(str(z["prompts"]))]
people = {(r.prompt_id, r.source, r.text): r.refused for r in data.xstest_replies()}
replies = []
for r in json.loads(str(z["replies"])):
    if r["source"] == "own":
        r["complied"] = labels[r["prompt_id"]]
    else:
        r["refused"] = people[(r["prompt_id"], r["source"], r["text"])]
    replies.append(Reply(**r))
request, extra_from = z["request"], int(z["extra_from"])
if os.environ.get("DIALOGUES"):
    d = np.load(os.environ["DIALOGUES"])
    assert [int(x) for x in d["layers"]] == [int(x) for x in z["layers"]], "states read at other layers"
    row = {str(i): k for k, i in enumerate(d["ids"]) if str(d["kind"][k]) == "hh"}
    hh = [p for p in data.hh_requests() if p.id in row]
    states = d["states"][[row[p.id] for p in hh]]
    states = states[:, 0] if states.ndim == 4 else states  # (read2.py keeps 3 features; the first is the request's)
    prompts = prompts[:extra_from] + hh + prompts[extra_from:]
    request = np.concatenate([request[:extra_from], states.astype(request.dtype), request[extra_from:]])
    extra_from += len(hh)
    print(len(hh), "labelled conversations")
t = Tables(prompts, request, replies, CaseStates(z["request"][:0], z["prefix"], z["n_reply"]),
           [int(x) for x in z["layers"]], extra_from=extra_from)
t0 = time.time()
if os.environ.get("PROBE_LAYER"):  # skip the search: one cross-validation at this layer and penalty
    best = cross_validate(t, t.layers.index(int(os.environ["PROBE_LAYER"])), float(os.environ.get("PROBE_C", "0.03")))
else:
    best = choose(t, progress=lambda k: print(".", end="", flush=True))
np.savez(sys.argv[1] + ".oof.npz", p_unsafe=best.p_unsafe, p_comply=best.p_comply, p_harm=best.p_harm,
         p_refuse=best.p_refuse)
print("\nlayer", t.layers[best.layer_index], "c", best.c, "cv seconds", round(time.time() - t0, 1))
for k, v in best.metrics.items():
    print(f"{k:45s} auc {v['auc']:.3f} kappa {v['kappa']:.3f} n {v['n']} pos {v['positives']}")
if len(sys.argv) > 4:
    from pathlib import Path

    from rainlocal.gguf_info import content_fingerprint

    probes = fit_final(t, best, Path(sys.argv[3]).name, content_fingerprint(sys.argv[3]))
    probes.metrics["fit"]["own_labels"] = "read"
    probes.metrics["fit"]["plan"] = "full"
    probes.metrics["fit"]["dialogues"] = extra_from - int(z["extra_from"])
    probes.save(Path(sys.argv[4]))
    print("saved", sys.argv[4])
