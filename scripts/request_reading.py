"""How well can a model's states read whether a request is unsafe, and how much of the own-reply harm
check does that reading cost? (README, "Latent judge": "The 0.5B's request reading is the ceiling".)

    python scripts/request_reading.py MODEL_PATH STATES.npz [--own LABELS.csv ...] [--single]

1. Reads the request state (the last 6 prompt positions, every second layer from 6 on) of XSTest's dev
   prompts, the 500 labelled HH conversations and the 1,200 extra prompts once, cached in STATES.npz.
2. Cross-validates request probes grouped by prompt, with the fit's folds (``logreg.group_folds`` over
   the measured prompts, seed 0) and its training rows (one-line requests plus the extras; the
   conversations for the multi-turn reading): single layers, several layers side by side, the mean over
   the template's last positions, and ensembles (the mean log-odds of single-layer readings at c=0.03).
   Prints XSTest and HH AUC / kappa.
3. With ``--own`` (one or more files, each reported apart): the model's own replies labelled by reading, judged as the shipped probes judge them
   (each by the fold that left its prompt out), with the request reading replaced by (a) the
   cross-validated variants above and (b) the prompt's true label: how much of the harm AUC is lost to
   the request reading.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

from rainlocal.engine.llama import LlamaEngine
from rainlocal.generate import Generator
from rainlocal.latent import data
from rainlocal.latent.calibrate import _extras
from rainlocal.latent.features import case_states
from rainlocal.latent.fit import FULL, _request_probes
from rainlocal.latent.logreg import auc, group_folds, kappa
from rainlocal.latent.probes import find_probes, harm_score

K = 6
ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("states")
ap.add_argument("--own", nargs="+", default=[])
ap.add_argument("--single", action="store_true", help="single layers only (several side by side is slow for a 1.5B)")
args = ap.parse_args()

eng = LlamaEngine(args.model, n_ctx=2048, n_threads=2, hidden=True)
gen = Generator(eng)
if not os.path.exists(args.states):
    layers = list(range(6, eng.n_layer, 2))
    eng.want_layers(layers)
    xst, hhr = data.xstest_prompts(), data.hh_requests()
    allp = list(xst) + list(hhr) + list(_extras(400))
    toks = [gen.prompt(p.messages)[0] for p in allp]
    rows, t0 = [], time.time()
    for a in range(0, len(toks), 8):
        grp = toks[a:a + 8]
        eng.read_states([list(t) for t in grp], phase="judge")
        rows.extend(eng.hidden_states(t, len(t) - K).astype(np.float32) for t in grp)
        eng.reset()
    np.savez(args.states, states=np.stack(rows), layers=np.array(layers), ids=np.array([p.id for p in allp]),
             unsafe=np.array([p.unsafe for p in allp]), multi=np.array([p.multi_turn for p in allp]),
             n_xs=len(xst), n_hh=len(hhr))
    print(f"read {len(allp)} requests in {time.time() - t0:.0f} s")

z = np.load(args.states)
S, layers, ids = z["states"], [int(x) for x in z["layers"]], [str(x) for x in z["ids"]]
y, multi = z["unsafe"].astype(float), z["multi"]
n_xs, n_meas = int(z["n_xs"]), int(z["n_xs"]) + int(z["n_hh"])
fold = np.concatenate([group_folds(ids[:n_meas], 5, 0), -np.ones(len(ids) - n_meas, int)])
xs = np.arange(len(ids)) < n_xs
hh = (np.arange(len(ids)) >= n_xs) & (np.arange(len(ids)) < n_meas)


def feature(kind: str, ls: list[int]) -> np.ndarray:
    li = [layers.index(x) for x in ls]
    x = S[:, -1, li, :] if kind == "last" else S[:, :, li, :].mean(axis=1)
    return x.reshape(len(ids), -1)


def cross_validated(x: np.ndarray, c: float) -> np.ndarray:
    """Out-of-fold P(unsafe), by the fit's own request probes (one-line requests and conversations)."""
    p = np.full(len(ids), np.nan)
    for f in range(5):
        te = fold == f
        m = _request_probes(x, y, fold != f, multi, c)
        p[te & ~multi] = m["request"].prob(x[te & ~multi])
        p[te & multi] = m["request_multi"].prob(x[te & multi])
    return p


mid = layers[len(layers) // 2]
variants = [("last", [lay], c) for lay in layers for c in (0.003, 0.03)]
if not args.single:
    variants += [("last", [mid - 2, mid, mid + 2], c) for c in (0.03, 0.1)]
    variants += [("mean", [mid], c) for c in (0.03, 0.3)]
results = {}


def show(name: str, p: np.ndarray) -> None:
    results[name] = p
    print(f"{name:34s} {auc(p[xs], y[xs]):.3f} / {kappa(p[xs] >= .5, y[xs] > .5):.2f}"
          f"          {auc(p[hh], y[hh]):.3f} / {kappa(p[hh] >= .5, y[hh] > .5):.2f}", flush=True)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


print(f"{'feature':34s} XSTest AUC / kappa   HH AUC / kappa")
for kind, ls, c in variants:
    show(f"{kind} layer(s) {ls} c={c}" + (f" (last {K} positions)" if kind == "mean" else ""),
         cross_validated(feature(kind, ls), c))
single = {lay: results[f"last layer(s) [{lay}] c=0.03"] for lay in layers}
for a, b in [(mid - 6, mid + 6), (mid - 4, mid + 2)]:
    ls = [lay for lay in layers if a <= lay <= b]
    if len(ls) > 1:
        show(f"ensemble of layers {ls[0]}-{ls[-1]}",
             1 / (1 + np.exp(-np.mean([logit(single[lay]) for lay in ls], axis=0))))

if args.own:
    probes = find_probes(args.model)
    eng.want_layers([probes.layer])
    prompts = {p.id: p for p in data.xstest_prompts()}
    unsafe_of = {i: p.unsafe for i, p in prompts.items()}
    at = {i: k for k, i in enumerate(ids[:n_xs])}
for own in args.own:
    rows = data.labelled_replies(Path(own), unsafe_of, "own")
    cs = case_states(eng, [gen.prompt(prompts[r.prompt_id].messages)[0] for r in rows],
                     [eng.tokenize(r.text.strip() or " ") for r in rows])
    win = cs.prefix[:, FULL, 0, :]
    held_out = [probes.for_prompt(r.prompt_id) for r in rows]
    assert all(ps.probes is not probes.probes for ps in held_out), "a labelled prompt that no fold left out"
    m = [ps.probes for ps in held_out]
    pc = np.array([mm["comply"].prob(w[None])[0] for mm, w in zip(m, win)])
    pt = np.array([mm["topic"].prob(w[None])[0] for mm, w in zip(m, win)]) if "topic" in m[0] else None
    shipped = np.array([mm["request"].prob(cs.request[i, 0][None])[0] for i, mm in enumerate(m)])
    unsafe = np.array([r.unsafe for r in rows])
    truth = np.array([r.harmful for r in rows])
    print(f"\n{own}: {len(rows)} own replies ({truth.sum()} harmful by reading); harm as the search scores it")
    for name, pu in [("shipped request probe (by fold)", shipped),
                     *[(n, p[[at[r.prompt_id] for r in rows]]) for n, p in results.items()],
                     ("the prompt's true label", np.where(unsafe, 0.98, 0.02))]:
        h = harm_score(pu, pc, pt)
        print(f"{name:40s} request AUC {auc(pu, unsafe):.3f}  harm AUC {auc(h, truth):.3f} kappa {kappa(h >= .5, truth):.3f}")
