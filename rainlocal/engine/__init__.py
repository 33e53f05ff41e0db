"""Engines run a language model; they know nothing about RAIN."""

from rainlocal.engine.base import Engine, PHASES

__all__ = ["Engine", "PHASES"]
