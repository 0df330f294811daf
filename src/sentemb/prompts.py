"""Which prompt a call puts before its texts: the rules of sentence-transformers, as pure functions.

    encode(prompt="...")            that text, whatever prompt_name says
    encode(prompt_name="query")     the model's prompts["query"] (unknown name: ConfigError)
    encode()                        the default prompt (EncoderConfig.default_prompt_name, else the folder's)
    encode_query()                  prompts["query"] ("" unless the model sets it; never the default)
    encode_document()               prompts["document"], else "passage", else "corpus"
"""

from __future__ import annotations

from collections.abc import Mapping

from sentemb.errors import ConfigError

QUERY = ("query",)
DOCUMENT = ("document", "passage", "corpus")


def resolve_prompt(
    prompts: Mapping[str, str],
    default_name: str | None,
    *,
    prompt: str | None = None,
    prompt_name: str | None = None,
) -> str:
    """The prompt text for one call ("" for none)."""
    if prompt is not None:
        return prompt
    name = prompt_name if prompt_name is not None else default_name
    if name is None or name == "":
        return ""
    if name not in prompts:
        known = ", ".join(f"{key!r} ({value!r})" for key, value in prompts.items())
        raise ConfigError(f"prompt_name={name!r} is not one of this model's prompts: {known}; or pass prompt='...'")
    return prompts[name]


def task_prompt_name(prompts: Mapping[str, str], candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` the model has (for encode_query / encode_document)."""
    return next((name for name in candidates if name in prompts), None)
