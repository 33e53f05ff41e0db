"""Decoding strategies over the ``Engine`` interface: RAIN tree search and plain sampling.

Nothing here imports llama.cpp or the CLI; both strategies yield events that a renderer consumes.
"""
