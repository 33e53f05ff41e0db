"""rainlocal: safer answers from a frozen local GGUF model through RAIN inference-time search."""

__version__ = "0.1.0"

from rainlocal.api import Model, Response, load  # noqa: E402  (the public Python API; light imports only)

__all__ = ["Model", "Response", "load", "__version__"]
