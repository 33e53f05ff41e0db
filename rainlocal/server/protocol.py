"""What a client may send (pydantic models of the OpenAI request bodies, plus rainlocal's ``rain``
field) and the OpenAI error shape every refusal is answered with.

Fields the OpenAI API has and rainlocal does not use (``user``, ``presence_penalty``, ``logprobs``, ...)
are accepted and ignored, as llama.cpp's server does, so existing clients work unchanged; the ones
that would change what a client gets back (``n`` above 1, non-text content) are refused.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: OpenAI error ``type`` by HTTP status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "server_error"}


class APIError(Exception):
    """A request rainlocal refuses: answered with ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    """The fields both endpoints share."""

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)  # llama.cpp's server takes it too
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    n: int | None = Field(default=None, ge=1, le=1, description="only one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    #: rainlocal's extra field: false = plain decoding, true = RAIN with the server's settings, or an
    #: object {"profile", "objective", any RAIN constant such as "T"} (validated in translate.py).
    rain: Union[bool, dict[str, Any], None] = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, "prompt: give one prompt per request (a string or a list of one string)",
                           param="prompt")
        return self.prompt[0]


_TYPE_NAMES = {"str", "bool", "int", "float", "none"}


def parse(model: type[BaseModel], body: bytes) -> Any:
    """The request body as ``model``; malformed JSON or a bad field is a 400 naming the field."""
    if not body.strip():
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise APIError(400, f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}",
                           code="invalid_json") from None
        # A union's alternatives show in the location as type names (``rain.bool``); users know fields.
        where = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _TYPE_NAMES or "[" in p)))
        msg = err["msg"]
        if where == "rain":
            msg = 'must be false (plain decoding), true, or an object like {"T": 20, "objective": "truthful"}'
        if err["type"] == "model_type":
            msg = "the request body must be a JSON object"
        raise APIError(400, f"{where}: {msg}" if where else msg, param=where or None) from None
