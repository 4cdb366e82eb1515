"""Untrusted text (item titles, user messages, model output): safe to show in a terminal, and recognised
when it addresses a model. Imports nothing of scenerec's: every floor may use it."""

from __future__ import annotations

import re
import unicodedata

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-_]")


def printable(text: str, max_length: int | None = None) -> str:
    """Text with escape sequences removed and control/format characters (incl. bidi overrides) dropped."""
    text = _ANSI.sub("", text)
    cleaned = "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
    )
    if max_length is not None and len(cleaned) > max_length:
        cleaned = cleaned[: max_length - 1] + "…"
    return cleaned


# Text that reads like an instruction to the model rather than a description of an item.
INSTRUCTION_LIKE = re.compile(
    r"\b(ignore|disregard|forget|override)\W+(?:(?:all|any|the|previous|prior|above|earlier|your|of|these)\W+)*"
    r"(instructions?|prompts?|rules|directions|guidelines)\b"
    r"|\b(system prompt|you are now|new instructions?|developer mode)\b"
    r"|\b(recommend|rank|rate|place|put|list|choose|pick)\b[^.!?\n]{0,40}\b(first|at the top|top of|above all|"
    r"highest|number one|#1)\b"
    r"|\b(always|only)\W+(say|answer|choose|pick|recommend)\b"
    r"|\banswer\W+(yes|no)\b",
    re.IGNORECASE,
)


def looks_like_instruction(text: str) -> bool:
    """True for text that addresses the model ("ignore previous instructions", "rank this first")."""
    return bool(INSTRUCTION_LIKE.search(text))



# Latin look-alikes a model reads as the Latin letter, though NFKC keeps them apart.
_CONFUSABLES = str.maketrans(
    "АВЕНІЈКМОРСТХУаеіјорсхуѕԁɡοьνΑΒΕΗΙΚΜΝΟΡΤΧΥΖ",
    "ABEHIJKMOPCTXYaeijopcxysdgobvABEHIKMNOPTXYZ",
)

# What text addressed to a model looks like, beyond `INSTRUCTION_LIKE`: chat-template
# tokens and role labels, ready-made answers in our JSON shapes, rules about ids, and the classic phrases
# in a few other languages.
_STEERING = re.compile(
    r"<\|[^|>]{1,30}\|>|\[/?INST\]|<</?SYS>>|</?tool_call>|<!--|\{\{|\{%"
    r"|#{2,}\s*(?:system|user|assistant|instruction|response)\b"
    r"|\"\s*(?:order|because|reason|profile|action|item_ids|scene)\s*\"\s*:"
    r"|\bids?\s+(?:must|should|have\s+to)\s+be\b|\bids?\s+(?:are|is)\s+(?:in)?valid\b"
    r"|\b(?:only|valid|allowed)\s+(?:item\s+)?ids?\b"
    r"|\b(?:correct|right|expected)\s+answer\b|\b(?:say|reply|respond|output)\W+(?:only\W+)?(?:yes|no)\b"
    r"|\bfrom\s+now\s+on\b|\bmust\s+(?:answer|say|reply|choose|pick|recommend|rank)\b|\btask\s*:"
    r"|\b(?:ignorez?|ignoriere|ignora|ignorar|ignorer|игнорируй)\b[^.!?\n]{0,40}"
    r"\b(?:instructions?|anweisungen|instrucciones|istruzioni|consignes|инструкции)\b",
    re.IGNORECASE,
)
# a role label opening a line ("System:", "### Assistant:"): needs the line breaks plain_text removes
_ROLE_LINE = re.compile(r"(?:^|\n)[\s#*>\[(]*(?:system|assistant|user|human)\s*:", re.IGNORECASE)


def plain_text(text: str) -> str:
    """Text as a model reads it: escapes and invisible characters gone, compatibility forms (fullwidth)
    and common Cyrillic/Greek look-alikes folded to Latin, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", printable(text)).translate(_CONFUSABLES)
    return " ".join(folded.split())


def reads_like_instruction(text: str) -> bool:
    """True for catalog or user text that addresses a model (an instruction, a role marker, a ready-made
    answer), also when disguised by zero-width or bidi characters, escapes, fullwidth or look-alike letters."""
    if not text:
        return False
    plain = plain_text(text)
    lines = unicodedata.normalize("NFKC", _ANSI.sub("", text))
    return looks_like_instruction(plain) or bool(_STEERING.search(plain) or _ROLE_LINE.search(lines))
