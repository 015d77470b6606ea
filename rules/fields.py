"""The rulebook's field types, shared by the mail rules (rules.book) and the alert rules
(rules.alert_rules): a pattern the rule engine can run, a word it can match, and non-empty
text. A pattern or word it cannot compile is a validation error naming the problem."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from rules.expressions import compile_pattern, compile_word


def _valid_regex(pattern: str) -> str:
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        raise PydanticCustomError("regex", "{problem}", {"problem": str(exc)}) from None
    return pattern


def _valid_word(word: str) -> str:
    try:
        compile_word(word)
    except ValueError as exc:
        raise PydanticCustomError("word", "{problem}", {"problem": str(exc)}) from None
    return word


Regex = Annotated[str, AfterValidator(_valid_regex)]
Word = Annotated[str, AfterValidator(_valid_word)]
Text = Annotated[str, Field(min_length=1)]
