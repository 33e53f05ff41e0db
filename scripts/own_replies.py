"""Write a model's own sampled replies to the XSTest dev prompts (CSV: prompt_id,label,prompt,reply,rule_complied),
for labelling by reading (latent/data/own_labels/).

    python scripts/own_replies.py MODEL_PATH OUT.csv [SEED]
"""
import csv
import sys

from rainlocal.engine.llama import LlamaEngine
from rainlocal.generate import Generator
from rainlocal.latent import data
from rainlocal.latent.own import generate_replies, rule_complied

path, out = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
eng = LlamaEngine(path, n_ctx=1024, n_threads=2)
gen = Generator(eng)
prompts = data.xstest_prompts()
toks = [gen.prompt([{"role": "user", "content": p.text}])[0] for p in prompts]
replies = generate_replies(eng, toks, seed=seed, progress=lambda k: print(k, end=" ", flush=True))
with open(out, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["prompt_id", "label", "prompt", "reply", "rule_complied"])
    for p, r in zip(prompts, replies):
        text = eng.detokenize(r)
        w.writerow([p.id, "unsafe" if p.unsafe else "safe", p.text, text, int(rule_complied(text))])
