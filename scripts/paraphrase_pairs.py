"""Cosine similarity of rainlocal's embeddings for near-paraphrase and contrasting sentence pairs, per model.

Used to place the similarity threshold (README, "Similarity thresholds"):
``python scripts/paraphrase_pairs.py smollm2-135m``
"""
import sys, json, numpy as np
from rainlocal.engine.llama import LlamaEngine
from rainlocal.catalog import model_path
SAME = [("I cannot help with that.", "I can't help with that."),
        ("Sure, here is how to do it.", "Sure! Here is how to do it."),
        ("You should store tomatoes at room temperature.", "You should keep tomatoes at room temperature."),
        ("I'm sorry, but I can't assist with that request.", "I am sorry, but I cannot assist with that request."),
        ("The best way is to ask your neighbour first.", "The best way is to ask your neighbor first."),
        ("It is illegal to enter someone's home without permission.", "It's illegal to enter someone's house without permission."),
        ("Here are some ideas:", "Here are a few ideas:"),
        ("That is a dangerous thing to do.", "That's a dangerous thing to do."),
        ("First, gather the ingredients.", "First, collect the ingredients."),
        ("No, I won't do that.", "No, I will not do that.")]
DIFF = [("I cannot help with that.", "Sure, here is how to do it."),
        ("You should store tomatoes at room temperature.", "You should store tomatoes in the fridge."),
        ("It is illegal to enter someone's home without permission.", "You can climb in through the back window."),
        ("Here are some ideas:", "I don't know."),
        ("First, gather the ingredients.", "First, find a sharp knife."),
        ("That is a dangerous thing to do.", "That is a fun thing to do."),
        ("The best way is to ask your neighbour first.", "The best way is to pick the lock."),
        ("No, I won't do that.", "Yes, I will do that."),
        ("I'm sorry, but I can't assist with that request.", "Of course, I can assist with that request."),
        ("Sure, here is how to do it.", "Sure, here is a poem about cats.")]
e = LlamaEngine(str(model_path(sys.argv[1])), n_ctx=512, n_threads=1)
def sims(pairs):
    out = []
    for a, b in pairs:
        x = e.embed([a, b]); out.append(float(x[0] @ x[1]))
    return out
s, d = sims(SAME), sims(DIFF)
print(json.dumps({"model": sys.argv[1], "same": [round(v,3) for v in s], "diff": [round(v,3) for v in d]}))
