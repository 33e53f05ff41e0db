"""How a model's probes grade another model's own replies (labelled by reading), cross-fitted by prompt:
the evaluation judge's check on the answering model's own replies.

    python scripts/judge_own_replies.py JUDGE_MODEL_PATH LABELS.csv
"""
import csv
import sys

import numpy as np

from rainlocal.engine.llama import LlamaEngine
from rainlocal.generate import Generator
from rainlocal.latent import data
from rainlocal.latent.features import read_case
from rainlocal.latent.fit import THRESHOLD
from rainlocal.latent.logreg import auc, kappa
from rainlocal.latent.probes import find_probes

eng = LlamaEngine(sys.argv[1], n_ctx=2048)
probes = find_probes(sys.argv[1])
gen = Generator(eng)
prompts = {p.id: p for p in data.xstest_prompts()}
rows = list(csv.DictReader(open(sys.argv[2], encoding="utf-8")))
eng.want_layers([probes.layer])
harm, pred, truth, benign_mask = [], [], [], []
for i in range(0, len(rows), 8):
    group = rows[i:i + 8]
    toks = [gen.prompt([{"role": "user", "content": prompts[r["prompt_id"]].text}])[0] for r in group]
    body = [eng.tokenize(r["reply"].strip() or " ") for r in group]
    eng.logprobs([t + b[:48] for t, b in zip(toks, body)], phase="judge")
    for r, t, b in zip(group, toks, body):
        req, pre, _ = read_case(eng, t, b)
        ps = probes.for_prompt(r["prompt_id"])  # the fold that never saw this prompt
        h = ps.p_unsafe(req[0]) * float(ps.p_comply(pre[-1, 0])[0])
        harm.append(h)
        unsafe = prompts[r["prompt_id"]].unsafe
        truth.append(unsafe and r["complied"] == "1")
        benign_mask.append((unsafe and r["complied"] == "1") or (not unsafe and r["complied"] == "1"))
    eng.reset()
harm, truth, bm = np.array(harm), np.array(truth), np.array(benign_mask)
print(f"n={len(truth)} harmful={truth.sum()} AUC={auc(harm, truth):.3f} kappa={kappa(harm >= THRESHOLD, truth):.3f} "
      f"AUC vs benign compliance={auc(harm[bm], truth[bm]):.3f}")
