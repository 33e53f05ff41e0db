"""The llama.cpp engine (``LlamaEngine``): one model, one unified-KV context holding many branches.

Modules: ``engine`` (load, tokenize, batched decode), ``slots`` (which branch each sequence slot
holds; plain Python), ``cache`` (the byte-bounded logits cache), ``embeddings`` (hidden-state
embeddings from a second context), ``markup`` (prompt tokens with control tokens parsed in template markup only), ``log``
(llama.cpp's log routed through Python), ``threads``.
"""

from rainlocal.engine.llama.engine import LlamaEngine

__all__ = ["LlamaEngine"]
