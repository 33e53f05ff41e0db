"""Read a model's states on the labelled sets once and cache them, for fitting experiments and the
shipped probes' reports.

    python scripts/probe_experiment.py MODEL_PATH OUT.npz OWN.csv [people_per_prompt] [extra]

OWN.csv: the model's own replies (scripts/own_replies.py); their labels are joined later.
"""
import csv
import json
import sys
import time

import numpy as np

from rainlocal.engine.llama import LlamaEngine
from rainlocal.generate import Generator
from rainlocal.latent import data
from rainlocal.latent.calibrate import _extras, _people_replies
from rainlocal.latent.data import Reply
from rainlocal.latent.fit import candidate_layers, read_tables

path, out, own_csv = sys.argv[1], sys.argv[2], sys.argv[3]
per = int(sys.argv[4]) if len(sys.argv) > 4 else 5
extra = int(sys.argv[5]) if len(sys.argv) > 5 else 400
eng = LlamaEngine(path, n_ctx=1024, n_threads=2)
gen = Generator(eng)
pt = lambda messages: gen.prompt(messages)[0]  # read_tables renders a conversation's messages
layers = candidate_layers(eng.n_layer)
prompts = data.xstest_prompts()
unsafe = {p.id: p.unsafe for p in prompts}
own = [Reply(r["prompt_id"], r["reply"], r["rule_complied"] == "1", unsafe[r["prompt_id"]], "own")
       for r in csv.DictReader(open(own_csv, encoding="utf-8"))]
replies = _people_replies(per) + own
t0 = time.time()
n = [0]


def prog(k):
    n[0] += k
    if n[0] % 200 < k:
        print(n[0], round(time.time() - t0, 1), flush=True)


t = read_tables(eng, pt, prompts, _extras(extra), replies, layers, prog)
np.savez(out, request=t.request, prefix=t.reply_states.prefix, n_reply=t.reply_states.n_reply,
         layers=np.array(layers), extra_from=t.extra_from,
         prompts=json.dumps([p.__dict__ for p in t.prompts]), replies=json.dumps([r.__dict__ for r in t.replies]))
print("done", time.time() - t0)
