"""``rainlocal bench``: the cost of RAIN against KV-cached vanilla decoding, measured in one run.

Method (also in the README, "Benchmarks"):

* the same prompts (the first N of the HH dev split, or of ``--data``: any HH, AdvBench or XSTest
  file; a file with prompt types is sampled round-robin over its types), the same loaded engine, the
  same ``Generator`` and stopping rule, seed and max tokens for every strategy;
* strategies (``--strategies``: vanilla, any RAIN profile such as fast and paper, best-of-n) run one
  after another over all prompts, in the order given (so the process's peak memory after the first
  strategy is its own);
* before each strategy the engine's branches and logits cache are cleared and the self-evaluation's
  fixed prompt prefix is decoded once, untimed (a long-running process pays it once per model), so
  no strategy profits from another's cache;
* per answer: wall time around the whole answer (prompt decode included), the time to the first
  committed text (prompt decode included), the engine's tokens decoded by phase on every engine
  involved, the time and calls spent inside ``llama_decode``, and the strategy's own counters.

Reported per strategy: answers, answer tokens, wall seconds, seconds per answer token, time to the
first committed text (median and max), tokens decoded per answer token (by phase; the prompt phase
is left out of "work"), the mean decode batch width (tokens per ``llama_decode`` call), the
self-evaluation cache hit rate (RAIN: searches whose judged text was already scored; best-of-N:
repeated samples), peak RSS during the strategy (see evals/memory.py); and each strategy's ratios to vanilla in the same run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any, Callable

from rainlocal.evals.bestofn import engines_of, fresh_start, work_of
from rainlocal.evals.memory import peak_rss_mb, reset_peak
from rainlocal.evals.strategies import Strategy, answer as strategy_answer
from rainlocal.generate import GenerationSettings, Generator

METHOD = (
    "same prompts, engine, Generator, stopping rule, seed and max tokens for every strategy; strategies run one "
    "after another; before each, the engine cache is cleared and the self-evaluation prefix decoded untimed; "
    "wall time per answer includes the prompt decode; tokens decoded are counted by the engine per phase "
    "(work = all phases but the prompt); peak RSS is the most the process held during the strategy (VmHWM reset before it; elsewhere the process peak)"
)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 6) if a is not None and b else None


def _per_answer(runs: list[dict[str, Any]], key: str) -> float | None:
    """Mean of a search counter over the answers that report it (how often RAIN's similarity
    updates and dynamic node addition fired); None for strategies without it."""
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(sum(vals) / len(vals), 2) if vals else None


def summarize_strategy(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = sum(r["answer_tokens"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    phases: dict[str, int] = {}
    for r in runs:
        for k, v in r["tokens_decoded"].items():
            phases[k] = phases.get(k, 0) + int(v)
    work = work_of(phases)
    evals = sum(r.get("evaluations") or 0 for r in runs)
    hits = sum(r.get("cache_hits") or 0 for r in runs)
    decode_s = sum(r.get("decode_s", 0.0) for r in runs)
    calls = sum(r.get("decode_calls", 0) for r in runs)
    requests = sum(r.get("requests", 0) for r in runs)
    ttft = [r["first_commit_s"] for r in runs if r.get("first_commit_s") is not None]
    per_token = {k: _ratio(v, tokens) for k, v in sorted(phases.items()) if k != "prompt"}
    per_token["total"] = _ratio(work, tokens)
    stops: dict[str, int] = {}
    for r in runs:
        stops[r["stop_reason"]] = stops.get(r["stop_reason"], 0) + 1
    return {
        "answers": len(runs),
        "answer_tokens": tokens,
        "wall_s": round(wall, 4),
        "s_per_answer_token": _ratio(wall, tokens),
        "tokens_decoded": dict(sorted(phases.items())),
        "work": work,
        "tokens_decoded_per_answer_token": per_token,
        "decode_s": round(decode_s, 4),
        "decode_share": _ratio(decode_s, wall),
        "decode_calls": calls,
        "decode_batch_width": _ratio(sum(phases.values()), calls),
        "requests": requests or None,
        "request_batch_width": _ratio(sum(r.get("request_s", 0.0) for r in runs), decode_s) if requests else None,
        "first_commit_s_median": round(statistics.median(ttft), 4) if ttft else None,
        "first_commit_s_max": round(max(ttft), 4) if ttft else None,
        "evaluations": evals,
        "eval_cache_hits": hits,
        "eval_cache_hit_rate": _ratio(hits, evals + hits) if (evals + hits) else None,
        "stop_reasons": stops,
        "peak_rss_mb": None,
        "similarity_updates_per_answer": _per_answer(runs, "similarity_updates"),
        "nodes_added_per_answer": _per_answer(runs, "nodes_added"),
        "per_answer": runs,
    }


def run_bench(generator: Generator, prompts: list[tuple[str, list[dict[str, str]]]], settings: GenerationSettings, *,
              strategies_settings: dict[str, Strategy] | None = None,
              best_of: tuple[bool, int | None] = (False, None), best_of_max: int = 32,
              on_answer: Callable[[str, str, float], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run every strategy over ``prompts`` ((id, messages) pairs) and return the bench result.

    ``strategies_settings`` maps strategy names to strategies (``rainlocal.evals.strategies``), in
    run order (the default: vanilla and RAIN with ``settings``); best-of-N with ``--best-of auto`` is
    matched to the work of the last RAIN strategy before it."""
    strategies: dict[str, dict[str, Any]] = {}
    plan = dict(strategies_settings or {"vanilla": Strategy("vanilla", "vanilla", replace(settings, mode="vanilla")),
                                        "rain": Strategy("rain", "rain", replace(settings, mode="rain"))})
    if best_of[0] and "best-of-n" not in plan:
        plan["best-of-n"] = Strategy("best-of-n", "best-of-n", settings)
    order = list(plan)
    rain_work: dict[str, int] = {}
    engines = engines_of(generator)

    def decode_clock() -> tuple[float, int, int, float]:
        # Engines on an inference server also count HTTP requests and request-seconds in flight.
        return (sum(float(getattr(e, "decode_seconds", 0.0)) for e in engines),
                sum(int(getattr(e, "decode_calls", 0)) for e in engines),
                sum(int(getattr(e, "requests", 0)) for e in engines),
                sum(float(getattr(e, "request_seconds", 0.0)) for e in engines))

    for name in order:
        fresh_start(generator, plan[name].settings)
        own_peak = reset_peak()
        runs = []
        for pid, messages in prompts:
            d0 = decode_clock()
            t0 = time.perf_counter()
            done = strategy_answer(generator, messages, plan[name], best_of=best_of[1], best_of_max=best_of_max,
                                   rain_work=rain_work.get(pid), should_stop=should_stop)
            wall = time.perf_counter() - t0
            d1 = decode_clock()
            if done.stop_reason == "interrupted":
                raise KeyboardInterrupt
            st = done.stats
            run = {
                "id": pid,
                "answer_tokens": len(done.tokens),
                "wall_s": round(wall, 4),
                "stop_reason": done.stop_reason,
                "tokens_decoded": dict(st.get("tokens_decoded", {})),
                "evaluations": st.get("evaluations"),
                "cache_hits": st.get("cache_hits"),
                "decode_s": round(d1[0] - d0[0], 4),
                "decode_calls": d1[1] - d0[1],
                "requests": d1[2] - d0[2],
                "request_s": round(d1[3] - d0[3], 4),
                "first_commit_s": (st.get("timings") or {}).get("first_commit_s") if done.tokens else None,
            }
            for k in ("searches", "early_stops", "rewinds", "n", "openings", "drafts", "rejected", "rewinds_further",
                      "similarity_updates", "nodes_added"):
                if k in st:
                    run[k] = st[k]
            run["work"] = work_of(run["tokens_decoded"])
            if "self_check" in st:
                run["self_check_fired"] = st["self_check"]["fired"]
            if plan[name].is_rain:
                rain_work[pid] = run["work"]
            runs.append(run)
            if on_answer:
                on_answer(name, pid, wall)
        summary = summarize_strategy(runs)
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["peak_rss_scope"] = "strategy" if own_peak else "process"
        if plan[name].kind in ("vanilla", "system"):
            summary["evaluations"] = None
            summary["eval_cache_hits"] = None
        strategies[name] = summary
    ratios: dict[str, dict[str, float | None]] = {}
    if "vanilla" not in strategies:
        return {"method": METHOD, "strategies": strategies, "ratios": ratios}
    va = strategies["vanilla"]
    for name in [n for n in order if n != "vanilla"]:
        s = strategies[name]
        ratios[f"{name}/vanilla"] = {
            "wall": _ratio(s["wall_s"], va["wall_s"]),
            "s_per_answer_token": _ratio(s["s_per_answer_token"], va["s_per_answer_token"]),
            "tokens_decoded_per_answer_token": _ratio(s["tokens_decoded_per_answer_token"]["total"],
                                                      va["tokens_decoded_per_answer_token"]["total"]),
            "first_commit_median": _ratio(s["first_commit_s_median"], va["first_commit_s_median"]),
            "first_commit_max": _ratio(s["first_commit_s_max"], va["first_commit_s_max"]),
        }
    return {"method": METHOD, "strategies": strategies, "ratios": ratios}


def render_text(result: dict[str, Any]) -> str:
    """A plain table for the terminal."""
    strategies = result["strategies"]
    names = list(strategies)
    label = {"vanilla": "vanilla", "rain": "RAIN", "best-of-n": "best-of-N"}
    label = {n: label.get(n, n) for n in names}

    def fmt(x: Any) -> str:
        if x is None:
            return "-"
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    rows = [("answers", "answers"), ("answer tokens", "answer_tokens"), ("wall s", "wall_s"),
            ("s / answer token", "s_per_answer_token"), ("first commit s, median", "first_commit_s_median"),
            ("first commit s, max", "first_commit_s_max"), ("tokens decoded / answer token", None),
            ("eval cache hit rate", "eval_cache_hit_rate"), ("llama_decode share of wall", "decode_share"),
            ("llama_decode calls", "decode_calls"), ("decode batch width", "decode_batch_width"),
            ("server requests", "requests"), ("request batch width", "request_batch_width"),
            ("peak RSS MB", "peak_rss_mb"),
            ("similarity updates / answer", "similarity_updates_per_answer"),
            ("nodes added / answer", "nodes_added_per_answer")]
    phases = sorted({p for n in names for p in strategies[n]["tokens_decoded_per_answer_token"] if p != "total"})
    table: list[list[str]] = [[""] + [label[n] for n in names]]
    for title, key in rows:
        if key is None:
            table.append([title] + [fmt(strategies[n]["tokens_decoded_per_answer_token"]["total"]) for n in names])
            for p in phases:
                table.append([f"  {p}"] + [fmt(strategies[n]["tokens_decoded_per_answer_token"].get(p)) for n in names])
        else:
            table.append([title] + [fmt(strategies[n].get(key)) for n in names])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    for k, r in result["ratios"].items():
        lines.append("")
        name = k.split("/")[0]
        lines.append(f"{label.get(name, name)}/vanilla: wall x{fmt(r['wall'])}, "
                     f"s per answer token x{fmt(r['s_per_answer_token'])}, "
                     f"tokens decoded per answer token x{fmt(r['tokens_decoded_per_answer_token'])}, "
                     f"first commit x{fmt(r['first_commit_median'])} (median), x{fmt(r['first_commit_max'])} (max)")
    return "\n".join(lines) + "\n"
