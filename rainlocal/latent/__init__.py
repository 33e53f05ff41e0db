"""The latent judge: linear probes on a model's own hidden states (see ``probes``, ``fit``, and
``rainlocal.judge.latent`` for the search's score)."""

from __future__ import annotations

from typing import Any


def latent_probes(engine: Any) -> tuple[Any, str]:
    """This engine's usable probes, or (None, why not: one line for the user)."""
    from rainlocal.latent.probes import find_probes

    if not getattr(engine, "can_read_states", False):
        where = getattr(engine, "url", None)
        return None, (f"{where} gives no hidden states" if where else "this engine gives no hidden states")
    path = getattr(engine, "path", None)
    if path is None:
        return None, "the model has no file to look its probes up by"
    probes = find_probes(path)
    if probes is None:
        return None, f"no latent probes for {path.name} yet (fit them with: rainlocal calibrate -m {path})"
    ok, why = probes.usable()
    if not ok:
        return None, f"the latent probes of {path.name} are not used: {why}"
    if probes.layer >= getattr(engine, "n_layer", probes.layer + 1):
        return None, f"the latent probes of {path.name} name layer {probes.layer}, which the model does not have"
    return probes, ""
