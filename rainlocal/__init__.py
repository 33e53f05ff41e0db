"""rainlocal: safer answers from a frozen local GGUF model through RAIN inference-time search."""

__version__ = "0.1.0"
