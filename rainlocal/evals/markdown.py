"""The eval report as Markdown (``report.md``), from the summary's plain data."""

from __future__ import annotations

from typing import Any

from rainlocal.evals.fitness import FIT_KAPPA, mark
from rainlocal.evals.strategies import SAFETY_PROMPT, SELF_CHECK_REFUSAL, label
from rainlocal.evals.textstats import HEAVY_REP, REP_N


def _rain_lines(meta: dict[str, Any]) -> list[str]:
    """One line per RAIN strategy with the constants it ran with (the command's own when none is given)."""
    by = meta.get("rain_strategies") or {"rain": meta}
    judge = f"; self-evaluation by `{meta['self_eval_judge']}`" if meta.get("self_eval_judge") else ""
    return [f"- {label(name)}: profile `{r.get('profile')}`, self-evaluation objective "
            f"`{r.get('objective')}`, score `{r.get('score')}`, T={r.get('T')} (at least {r.get('min_searches')} "
            f"searches a step), T_m={r.get('T_m')}, V={r.get('V')}{judge}" for name, r in by.items()]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def rate_cell(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "–"
    lo, hi = d["ci95"]
    return f"{_pct(d['rate'])} [{_pct(lo)}, {_pct(hi)}] ({d['k']}/{d['n']})"


def ratio_cell(d: dict[str, Any] | None) -> str:
    if not d or d.get("ratio") is None:
        return "–"
    lo, hi = d.get("ci95") or (d["ratio"], d["ratio"])
    return f"{_fmt(d['ratio'])}x [{_fmt(lo)}, {_fmt(hi)}]"


def _kappa(k: dict[str, Any] | None) -> str:
    return "–" if not k or k.get("kappa") is None else f"{k['kappa']:.2f}"


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _table_head(lead: str, systems: list[str]) -> list[str]:
    n_lead = lead.count("|") - 1
    cells = "".join(f" {label(x)} |" for x in systems)
    return [lead + cells, "|" + "---|" * (n_lead + len(systems))]


def _row(*cells: Any) -> str:
    """One table row; a row of a report with no strategies yet has just its leading cells."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _settings(s: dict[str, Any]) -> list[str]:
    meta, systems = s["meta"], s["systems"]
    k = s.get("samples", 1)
    seeds = f"seed {meta.get('seed')}" if k == 1 or meta.get("seed") is None else (
        f"{k} samples per prompt, seeds {meta['seed']}-{meta['seed'] + k - 1}")
    L = [f"# rainlocal eval: {s['suite']}", "",
         f"- model: `{meta.get('model')}`; {seeds}; max tokens {meta.get('max_tokens')}; "
         f"sampling temp {meta.get('temp')}, top-p {meta.get('top_p')}, top-k {meta.get('top_k')}",
         *_rain_lines(meta),
         f"- data: `{meta.get('data')}`" + (f" with attack suffix {meta['attack_suffix']!r}" if meta.get("attack_suffix") else "")
         + (f" (a fixed seeded sample of {meta['limit']})" if meta.get("limit") else "")
         + "; prompts evaluated: " + (", ".join(f"{label(x)} {s['items'][x]}" for x in systems) or "none yet")
         + (f" ({', '.join(str(s['answers'][x]) for x in systems)} answers)" if k > 1 else ""),
         *_judge_lines(s),
         "- strategies: same model, seed, stopping rule and length limit; vanilla is KV-cached sampling"]
    if k > 1:
        L.append(f"- samples: each prompt answered {k} times by each strategy (sample i with seed + i). Rates count "
                 "every answer (their intervals treat the samples of a prompt as independent, which they are not: "
                 "read them as descriptive). Paired comparisons are by prompt: a prompt's outcome is its mean over "
                 "its samples, one sign per prompt.")
    if "system" in systems:
        L.append(f"- system prompt baseline: {meta.get('safety_prompt') or SAFETY_PROMPT!r}")
    if "self-check" in systems:
        L.append(f"- self-check: vanilla, then one self-evaluation of the answer (objective `{meta.get('objective')}`, "
                 f"score `{meta.get('score')}`); below 0 it answers {SELF_CHECK_REFUSAL!r} instead")
    if "best-of-n" in systems:
        L.append(f"- best-of-N: {meta.get('best_of_desc')}")
    return L + [""]


def _judge_lines(s: dict[str, Any]) -> list[str]:
    """The settings' lines on the evaluation judge: how it decides, and for the latent judge which
    probes, which criteria it handed to the prompted judge and how the grading was cross-fitted."""
    meta = s["meta"]
    prompted = ("yes/no criteria in both option orders, verdict = mean P(good option) > 0.5; the three-way "
                "question in its three cyclic orders")
    if meta.get("judge_method") != "latent":
        return [f"- evaluation judge: {meta.get('judge')} (method `{meta.get('judge_method')}`; {prompted})"]
    p = meta.get("judge_probes") or {}
    cv = p.get("cv") or {}
    named = (("request", "request"), ("HH conversations' request (labelled by reading)", "request_hh"),
             ("harm product", "product_people"), ("harm with the topic probe", "judged_people"),
             ("three-way", "three_way_people"))
    agree = "; ".join(f"{name} AUC {cv[k]['auc']:.2f}, kappa {cv[k]['kappa']:.2f}" for name, k in named if k in cv)
    L = [f"- evaluation judge: {meta.get('judge')} (method `latent`: no text generated; harmful when P(unsafe "
         f"request) x P(the reply complies) >= {p.get('threshold', 0.5)}"
         + (" (P(unsafe) averaged in log-odds with the topic probe's reading of the reply)" if "judged_people" in cv else "")
         + f", the three-way label from the compliance "
         f"and refusal probes; states over the request and the reply's first {p.get('window', 48)} tokens)"
         + (f"; the probes' cross-validated agreement with people: {agree}" if agree else "")]
    uses = [u for u in ((s.get("judge_check") or {}).get("latent"), s.get("judge_use")) if u]
    fallback = sorted({c for u in uses for c, m in u["methods"].items() if any(k != "latent" for k in m)})
    if fallback:
        L.append(f"- criteria the probes cannot read, asked of the prompted judge (`probs`, {prompted}) on the same "
                 f"model instead: {', '.join(fallback)}")
    for what, u in (("human-label and written check cases", (s.get("judge_check") or {}).get("latent")),
                    ("answers", s.get("judge_use"))):
        if not u:
            continue
        w = u["prompts"]
        L.append(f"- {what}: cross-fitted by prompt: {p.get('folds', u['folds_used'])} folds; "
                 f"{w.get('held_out', 0)} graded by the fold that never saw their labelled prompt"
                 + (f", {w['trained']} on prompts the probes were fitted on in every fold (e.g. AdvBench's: not "
                    "held out)" if w.get("trained") else "")
                 + (f", {w['new']} on prompts new to the probes" if w.get("new") else ""))
    return L


def _headline_head(s: dict[str, Any], name: str, default: str) -> str:
    c = (s.get("headline_columns") or {}).get(name)
    if not c:
        return default
    f = c.get("fitness")
    return f"{c['label']}" + (f" ({mark(f)})" if f else "")


def _headline(s: dict[str, Any]) -> list[str]:
    rows = s.get("headline") or []
    if not any(r.get("harmless") or r.get("safe_compliance") for r in rows):
        return []
    harm = _headline_head(s, "harmless", "harmless on unsafe prompts (judge)")
    if s["suite"] == "advbench":
        harm = f"1 - {harm}"
    L = ["## Headline (95% intervals)", "",
         f"| strategy | {harm} | {_headline_head(s, 'safe_compliance', 'full compliance on safe prompts (judge)')} | "
         "wall time / vanilla | engine work / vanilla |", "|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {label(r['system'])} | {rate_cell(r.get('harmless'))} | {rate_cell(r.get('safe_compliance'))} | "
                 f"{ratio_cell(r.get('time_ratio'))} | {ratio_cell(r.get('work_ratio'))} |")
    L += ["", "Rates: Wilson intervals. Ratios: sums over the prompts both answered, with a paired bootstrap "
          "interval (2,000 resamples of the prompts). Wall time is answering only (judging not counted); engine "
          "work is tokens decoded in every phase but the prompt, on every model involved. Each rate column is the "
          f"suite's judged one unless its kappa against people is below {FIT_KAPPA} and the string rule's is not "
          "(then the string rule's).", ""]
    if s.get("chart"):
        L += [f"![harmlessness against cost]({s['chart']})", ""]
    return L


def _judge_checks(s: dict[str, Any]) -> list[str]:
    L = ["## Evaluation judge agreement on labelled data", ""]
    c = s.get("judge_check")
    if not c:
        return L + ["Not measured (`--check-judge 0 --check-human 0`, or no labelled data found). "
                    "Judged rates are unvalidated.", ""] + _self_eval_check(s)
    L += [f"{c['description']}: {c['cases']} cases.", ""] + _shipped_line(c.get("shipped"))
    if c.get("pairs"):
        p = c["pairs"]
        L.append(f"- written pairs ({p['cases']} cases): accuracy {rate_cell(p['accuracy'])}, undecided {p['undecided']}; "
                 f"pairwise (good reply scored above bad) {rate_cell(p['pairwise_accuracy'])}, ties {p['pairwise_ties']}")
    for kind, what in (("harm", "harm on unsafe prompts (harmless = human full refusal)"),
                       ("refusal", "refusal on safe prompts (refusal = human full or partial refusal)")):
        if c.get(kind):
            h = c[kind]
            unfit = h["kappa"].get("kappa") is not None and h["kappa"]["kappa"] < FIT_KAPPA
            L.append(f"- human labels, {what}, {h['cases']} cases ({h['positives']} positive): accuracy "
                     f"{rate_cell(h['accuracy'])}, Cohen's kappa {_kappa(h['kappa'])}"
                     + (" **unfit**" if unfit else "") + f", undecided {h['undecided']}")
    rules = c.get("string_rule") or {}
    if rules:
        L.append("- the string rules on the same cases (no judge): " + "; ".join(
            f"{what} kappa {_kappa(rules[k])}" + (" **unfit**" if (rules[k].get("kappa") or 0) < FIT_KAPPA else "")
            for k, what in (("rule_harm", "full refusal on the harm cases"),
                            ("rule_refusal", "refusal on the refusal cases"),
                            ("zou", "refusal strings (Zou et al.) on the harm cases")) if k in rules))
    L += ["", "Accuracy near the majority share or kappa near 0 means the judge adds little over chance; the "
          f"string-rule rates need no judge. A column whose kappa against people is below {FIT_KAPPA} is marked "
          "**unfit** wherever it appears: do not take its rates at their word.", ""]
    return L + _self_eval_check(s)


def _shipped_line(u: dict[str, Any] | None) -> list[str]:
    if not u:
        return []
    return [f"Of these, {u['cases']} of {u['of']} are the results shipped with rainlocal for this model (made by the "
            f"same code on the catalogue's file), used after {u['spot']} read on this machine agreed with them "
            f"(median difference {u.get('median_delta', 0):.4f}, largest {u['max_delta']:.4f}); `--recheck` reads "
            "every case here.", ""]


def _self_eval_check(s: dict[str, Any]) -> list[str]:
    meta = s["meta"]
    L: list[str] = []
    sc = s.get("self_eval_check")
    if sc:
        who = f"`{meta['self_eval_judge']}`" if meta.get("self_eval_judge") else "the answering model"
        whose = f" (the judge `{sc['system']}` searched with)" if sc.get("system") else ""
        if sc.get("score") == "latent":
            how = (f"with its latent probes{whose}: s = 1 - 2 P(unsafe) P(complies), the vote its sign "
                   "(the paper's prompted judge scored 52% for a 7B model and 98% for 70B)")
        else:
            how = (f"with the `{sc.get('objective')}` self-evaluation prompt RAIN searches with{whose} "
                   "(the paper measured 52% for a 7B model and 98% for 70B)")
        L += ["## Self-evaluation (the search's judge) on the same labelled data", "",
              f"The harm cases above scored by {who} {how}:", ""]
        for kind, what in (("pairs", "written pairs"), ("harm", "human-labelled harm cases")):
            d = sc.get(kind)
            if not d:
                continue
            extra = (f"; soft pairwise {rate_cell(d['soft_pairwise_accuracy'])}" if "soft_pairwise_accuracy" in d
                     else f"; soft Cohen's kappa {_kappa(d.get('kappa'))}")
            L.append(f"- {what} ({d['cases']}): vote (the paper's score) {rate_cell(d['vote_accuracy'])}"
                     f" (undecided {d['vote_undecided']}); soft score {rate_cell(d['soft_accuracy'])}{extra}")
        L.append("")
        L += _shipped_line(sc.get("shipped"))
    return L


def _rates(s: dict[str, Any]) -> list[str]:
    systems = s["systems"]
    fitness = s.get("fitness") or {}
    L = ["## Rates (95% Wilson intervals)", ""] + _table_head("| metric | better | kappa vs people |", systems)
    for m in s["metrics"]:
        L.append(_row(m["label"], m["better"] or "", mark(fitness.get(m["key"])),
                      *(rate_cell(s["rates"][m["key"]][x]) for x in systems)))
    if any(fitness.values()):
        L += ["", f"kappa vs people: Cohen's kappa of the verdicts a row reads against people's labels on the human-label "
              f"cases above; **unfit** below {FIT_KAPPA}: do not take that row at its word."]
    und = [(m["label"], x, s["undecided"][m["key"]][x]) for m in s["metrics"] for x in systems if s["undecided"][m["key"]][x]]
    if und:
        L += ["", "Undecided verdicts (left out of the rate): " + "; ".join(f"{a} / {label(x)}: {n}" for a, x, n in und)]
    L.append("")
    if s.get("self_check_fired"):
        L += ["Self-check fired (answer replaced by a refusal): " +
              "; ".join(f"{label(x)} {rate_cell(d)}" for x, d in s["self_check_fired"].items()), ""]
    scores = s.get("scores") or {}
    if any(v.get("n") for d in scores.values() for v in d.values()):
        how = ("P(good option), averaged over both option orders" if s["meta"].get("judge_method") != "latent" else
               "P(good): 1 - P(unsafe) x P(complies) from the latent probes; the prompted judge's P(good option) "
               "for the criteria it answers")
        L += [f"Mean judge score {how} (higher is better):", ""]
        L += _table_head("| criterion |", systems)
        L += [_row(crit, *(_fmt(d[x].get("mean")) for x in systems)) for crit, d in scores.items()]
        L.append("")
    return L


def _degenerate(s: dict[str, Any]) -> list[str]:
    systems = s["systems"]
    d = s.get("degenerate") or {}
    if not d:
        return []
    L = ["## Degenerate text (no judge)", "",
         f"rep-{REP_N}: share of a reply's word {REP_N}-grams that repeat an earlier one; heavy repetition: "
         f"rep-{REP_N} >= {HEAVY_REP}. distinct-n: unique word n-grams / all, pooled over the strategy's replies.", ""]
    L += _table_head("| |", systems)
    L.append(_row("heavy repetition", *(rate_cell(d[x]["heavy_repetition"]) for x in systems)))
    for key, name in ((f"mean_rep_{REP_N}", f"mean rep-{REP_N}"), ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2")):
        L.append(_row(name, *(_fmt(d[x].get(key)) for x in systems)))
    L.append("")
    if s.get("worst_examples"):
        L += ["Most repetitive replies:", ""]
        for w in s["worst_examples"]:
            text = w["reply"].replace("\n", " ").replace("|", "\\|")
            L.append(f"- {label(w['system'])}, `{w['id']}`, rep-{REP_N} {w[f'rep_{REP_N}']:.2f}: {text!r}")
        L.append("")
    return L


def _unfit(label_text: str, f: dict[str, Any] | None) -> str:
    return label_text + (f" ({mark(f)})" if f and not f["fit"] else "")


def _paired_table(name: str, comp: dict[str, Any], labels: dict[str, str]) -> list[str]:
    if not comp["paired"] and not comp.get("paired_scores"):
        return []
    L = [f"| metric | {name} better | {name} worse | tie | sign test p |", "|---|---|---|---|---|"]
    for k, p in comp["paired"].items():
        L.append(f"| {labels[k]} | {p['wins']} | {p['losses']} | {p['ties']} | {p['sign_test_p']:.3g} |")
    for k, p in (comp.get("paired_scores") or {}).items():
        L.append(f"| {k} judge score P(good) | {p['wins']} | {p['losses']} | {p['ties']} | {p['sign_test_p']:.3g} |")
    return L + [""]


def _comparisons(s: dict[str, Any]) -> list[str]:
    L: list[str] = []
    fitness = s.get("fitness") or {}
    labels = {m["key"]: _unfit(m["label"], fitness.get(m["key"])) for m in s["metrics"]}
    for other, comp in s["comparisons"].items():
        name = label(other)
        L += [f"## {name} against vanilla (paired, same prompts and seed)" if s.get("samples", 1) == 1 else
              f"## {name} against vanilla (paired by prompt, each prompt's {s['samples']} samples averaged)", ""]
        L += _paired_table(name, comp, labels)
        L += [f"- time ratio {name}/vanilla (answer wall time, {comp['items']} prompts): **{ratio_cell(comp['time_ratio'])}**",
              f"- engine work ratio (tokens decoded, all phases but the prompt): **{ratio_cell(comp['work_ratio'])}**", ""]
    for pair in s.get("rain_pairs") or []:
        name, against = label(pair["system"]), label(pair["against"])
        L += [f"## {name} against {against} (paired, {pair['items']} prompts"
              + (f", each prompt's {s['samples']} samples averaged)" if s.get("samples", 1) > 1 else ")"), ""]
        L += _paired_table(name, pair, labels)
    return L


def _cost(s: dict[str, Any]) -> list[str]:
    systems, cost = s["systems"], s["cost"]
    L = ["## Cost", ""] + _table_head("| |", systems)
    rows = [("answers", "answers"), ("answer tokens", "answer_tokens"), ("wall s (answers only)", "wall_s"),
            ("s per answer token", "s_per_answer_token"), ("tokens decoded", "work"),
            ("tokens decoded per answer token", "work_per_answer_token")]
    L += [_row(a, *(_fmt(cost[x].get(k)) for x in systems)) for a, k in rows]
    keys = sorted({k for x in systems for k in cost[x].get("first_commit_s_median", {})}, key=lambda k: k != "all")
    for k in keys:  # "all" first, then the prompt labels
        L.append(_row("first text shown, median s" + ("" if k == "all" else f" ({k} prompts)"),
                      *(_fmt(cost[x].get("first_commit_s_median", {}).get(k)) for x in systems)))
    for p in sorted({p for x in systems for p in cost[x]["tokens_decoded"]}):
        L.append(_row(f"tokens decoded: {p}", *(_fmt(cost[x]["tokens_decoded"].get(p, 0)) for x in systems)))
    for title, key in (("similarity updates per answer", "similarity_updates_per_answer"),
                       ("nodes added per answer", "nodes_added_per_answer")):
        if any(key in cost[x] for x in systems):
            L.append(_row(title, *(_fmt(cost[x].get(key)) for x in systems)))
    if any("mean_n" in cost[x] for x in systems):
        L.append(_row("mean N", *(_fmt(cost[x].get("mean_n")) for x in systems)))
    L.append("")
    short = sum(cost[x].get("below_matched_work") or 0 for x in systems)
    if short:
        L += [f"best-of-N reached its cap (`--best-of-max`) before matching RAIN's work on {short} prompts: there it "
              "had less compute than RAIN.", ""]
    return L


def render_markdown(s: dict[str, Any]) -> str:
    L = _settings(s) + _headline(s) + _judge_checks(s) + _rates(s) + _degenerate(s) + _comparisons(s) + _cost(s)
    L.append("Raw answers, judge prompts, raw judge outputs and verdicts: `results.jsonl`; these numbers: `summary.json`.")
    return "\n".join(L) + "\n"
