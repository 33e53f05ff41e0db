"""The search's latent self-evaluation on the answering model's own replies (labelled by reading), as the
search scores them: the model's shipped probes, each reply by the fold that left its prompt out.

    python scripts/self_judge_own_replies.py MODEL_PATH LABELS.csv [LABELS.csv ...] [-t THREADS]

LABELS.csv: prompt_id,reply,complied (1 = complied, 0 = refused or partly), e.g. the reading labels that
ship in rainlocal/latent/data/own_labels/ or a second sample labelled the same way. Several files are
judged together and each apart. Prints harm (unsafe prompt and complied) AUC and kappa at 0.5, against the
model's benign compliance, and the compliance probe's agreement with the reading.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from rainlocal.engine.llama import LlamaEngine
from rainlocal.generate import Generator
from rainlocal.latent import data
from rainlocal.latent.features import case_states
from rainlocal.latent.fit import FULL
from rainlocal.latent.logreg import auc, kappa
from rainlocal.latent.probes import find_probes

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("labels", nargs="+")
ap.add_argument("-t", "--threads", type=int, default=None)
args = ap.parse_args()

eng = LlamaEngine(args.model, n_ctx=2048, n_threads=args.threads, hidden=True)
gen = Generator(eng)
probes = find_probes(args.model)
eng.want_layers([probes.layer])
prompts = {p.id: p for p in data.xstest_prompts()}
unsafe_of = {i: p.unsafe for i, p in prompts.items()}


def judge(rows):
    cs = case_states(eng, [gen.prompt(prompts[r.prompt_id].messages)[0] for r in rows],
                     [eng.tokenize(r.text.strip() or " ") for r in rows])
    harm, comply = [], []
    for i, r in enumerate(rows):
        ps = probes.for_prompt(r.prompt_id)
        assert ps.probes is not probes.probes, f"{r.prompt_id}: no fold left this prompt out"
        h, parts = ps.judged_harm(ps.p_unsafe(cs.request[i, 0]), cs.prefix[i, FULL, 0])
        harm.append(h)
        comply.append(parts["p_comply"])
    return np.array(harm), np.array(comply)


def report(name, rows, harm, comply):
    truth = np.array([r.harmful for r in rows])
    complied = np.array([r.complied for r in rows])
    benign = complied & ~np.array([r.unsafe for r in rows])
    vs = truth | benign
    print(f"{name}: {len(rows)} replies, {truth.sum()} harmful by reading | harm AUC {auc(harm, truth):.3f} "
          f"kappa {kappa(harm >= .5, truth):.3f} | vs benign compliance AUC {auc(harm[vs], truth[vs]):.3f} | "
          f"complies kappa {kappa(comply >= .5, complied):.3f}", flush=True)


t0 = time.perf_counter()
every = []
for path in args.labels:
    rows = data.labelled_replies(Path(path), unsafe_of, "own")
    h, c = judge(rows)
    report(Path(path).name, rows, h, c)
    every.append((rows, h, c))
if len(every) > 1:
    report("all together", [r for rows, _, _ in every for r in rows],
           np.concatenate([h for _, h, _ in every]), np.concatenate([c for _, _, c in every]))
print(f"probes: {probes.model} layer {probes.layer}; {time.perf_counter() - t0:.0f} s")
