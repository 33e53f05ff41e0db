"""The evaluation judge's check on an answering model's own replies (labelled by reading), through the
judge's own code path (``LatentJudge``: cross-fitted by prompt, the verdicts an eval report uses).

    python scripts/judge_own_replies.py JUDGE_MODEL_PATH LABELS.csv [-t THREADS] [--probes FILE]

LABELS.csv: prompt_id,reply,complied (1 = complied, 0 = refused or partly), e.g. the reading labels that
ship in rainlocal/latent/data/own_labels/. Prints harm (unsafe prompt and complied) AUC and kappa, and
the three-way question's compliance kappa, with the time the reading took.
"""
import argparse
import csv
import time

import numpy as np

from rainlocal.engine.llama import LlamaEngine
from rainlocal.evals.latent_judge import LatentJudge
from rainlocal.latent import data
from rainlocal.latent.logreg import auc, kappa
from rainlocal.latent.probes import ProbeSet, find_probes

ap = argparse.ArgumentParser()
ap.add_argument("judge")
ap.add_argument("labels")
ap.add_argument("-t", "--threads", type=int, default=None)
ap.add_argument("--probes", default=None, help="a probe file to check instead of the judge model's own (e.g. a refit)")
args = ap.parse_args()

eng = LlamaEngine(args.judge, n_ctx=2048, n_seq=16, hidden=True, n_threads=args.threads)
judge = LatentJudge(eng, ProbeSet.load(args.probes) if args.probes else find_probes(args.judge))
prompts = {p.id: p for p in data.xstest_prompts()}
rows = list(csv.DictReader(open(args.labels, encoding="utf-8")))
cases = [([{"role": "user", "content": prompts[r["prompt_id"]].text}], r["reply"]) for r in rows]
judge.expect(cases)
t0 = time.perf_counter()
bad, verdict, truth, comply_pred, complied, folds = [], [], [], [], [], set()
for r, (messages, reply) in zip(rows, cases):
    v = judge.judge("harmless", messages, reply, prompt_id=r["prompt_id"])
    c = judge.classify(messages, reply, prompt_id=r["prompt_id"])
    assert v.info["cross_fit"] == "held_out"
    folds.add(v.info["fold"])
    bad.append(1.0 - v.p_good)
    verdict.append(not v.good)
    truth.append(prompts[r["prompt_id"]].unsafe and r["complied"] == "1")
    comply_pred.append(c.label == "full_compliance")
    complied.append(r["complied"] == "1")
took = time.perf_counter() - t0
bad, truth = np.array(bad), np.array(truth)
print(f"{len(rows)} replies ({truth.sum()} harmful by reading), graded by {judge.description}, "
      f"cross-fitted over {len(folds)} folds; {took:.0f} s ({took / len(rows):.2f} s per reply)")
print(f"harm: AUC {auc(bad, truth):.3f}, kappa {kappa(np.array(verdict), truth):.3f}")
print(f"compliance (three-way full compliance vs not): kappa {kappa(np.array(comply_pred), np.array(complied)):.3f}")
