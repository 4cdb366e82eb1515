"""Evidence said specifically, and the check an LLM rephrasing of it must pass.

`evidence_sentence` builds the template sentence of a recommendation from its typed evidence (see
`recommend/evidence.py`): the template varies with the kind of the strongest contributor, the second
contributor's kind and whether users like this one bought it, so a list of ten reads as ten reasons,
not one. `sentence_shape` names the template used (what the benchmark counts as variety).

`invented` is the guard on the LLM: a rephrased sentence may only use the pieces it was given. It is
rejected when it names an item that is not in the evidence (a «quoted» title or another history item's
title), a number that is not one of the evidence's (counts, shares, numbers inside the cited titles), or
an attribute word found neither in the candidate's and cited items' texts, the evidence words, nor the
small vocabulary sentences are made of.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .. import prompts
from ..models import Evidence, Recommendation

GLUE = frozenset(
    [
        "because",
        "you",
        "liked",
        "like",
        "likes",
        "love",
        "loved",
        "bought",
        "buy",
        "buying",
        "also",
        "both",
        "share",
        "shares",
        "shared",
        "same",
        "similar",
        "close",
        "closer",
        "match",
        "matches",
        "matched",
        "fits",
        "fit",
        "goes",
        "pairs",
        "with",
        "and",
        "the",
        "a",
        "an",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "for",
        "from",
        "in",
        "of",
        "on",
        "to",
        "as",
        "at",
        "by",
        "or",
        "so",
        "too",
        "your",
        "yours",
        "their",
        "them",
        "they",
        "people",
        "shoppers",
        "users",
        "customers",
        "history",
        "scene",
        "pick",
        "picked",
        "choice",
        "great",
        "good",
        "nice",
        "perfect",
        "ideal",
        "useful",
        "handy",
        "would",
        "will",
        "might",
        "may",
        "can",
        "could",
        "should",
        "item",
        "items",
        "product",
        "products",
        "one",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "very",
        "really",
        "more",
        "most",
        "much",
        "many",
        "other",
        "others",
        "well",
        "just",
        "into",
        "out",
        "up",
        "about",
        "than",
        "then",
        "there",
        "here",
        "made",
        "make",
        "makes",
        "making",
        "use",
        "used",
        "using",
        "ranks",
        "ranked",
        "model",
        "score",
        "description",
        "mention",
        "mentions",
        "word",
        "words",
    ]
)
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
QUOTED_TITLE = re.compile(r"«([^»]*)»")
WORD = re.compile(r"[a-z][a-z'-]{2,}")
SHOWN_TITLE = 70


def _t(text: str) -> str:
    return prompts.quote(text, SHOWN_TITLE)


def _words(words: Sequence[str], n: int = 2) -> str:
    return ", ".join(f"“{w}”" for w in words[:n])


def _clause(e: Evidence, method: str | None) -> str:
    """The main sentence for the strongest contributor, by its kind."""
    if e.kind == "co_purchase":
        return f"{e.count} shoppers who bought «{_t(e.title)}» in {e.scene} also bought this{_later(e)}."
    if e.kind == "shared_attributes":
        return f"Shares {_words(e.words)} with «{_t(e.title)}» from your {e.scene} history."
    if e.kind == "text_nearness":
        return f"Its description is close to «{_t(e.title)}» ({e.scene}): both mention {_words(e.words)}."
    if e.kind == "model" and e.share is not None:
        model = "transfer model" if method and method.startswith("transfer") else "ranking"
        return f"The {model} puts it here mostly for «{_t(e.title)}» ({e.scene}, {round(100 * e.share)}% of its lift)."
    return f"Close to «{_t(e.title)}», which you liked in {e.scene}."


def _later(e: Evidence) -> str:
    """How many of the co-purchasers bought it after the history item, where any did."""
    return f", {e.after} of them later" if e.after else ""


def _second(e: Evidence) -> str:
    """The shorter clause for the second contributor."""
    if e.kind == "co_purchase":
        return f" So did {e.count} buyers of «{_t(e.title)}»."
    if e.kind in ("shared_attributes", "text_nearness") and e.words:
        return f" Like «{_t(e.title)}», it is about {_words(e.words, 1)}."
    return f" «{_t(e.title)}» ({e.scene}) points the same way."


def _joint(evidence: Sequence[Evidence]) -> str:
    """The sentence for a group that moved the item only together, and its most specific fact."""
    group = [e for e in evidence if e.joint]
    titles = [f"«{_t(e.title)}»" for e in group]
    named = ", ".join(titles[:-1]) + f" and {titles[-1]}"
    scenes = sorted({e.scene for e in group})
    text = f"Your {named} ({', '.join(scenes)}) put it here together; no one of them alone does."
    fact = _joint_fact(group)
    if fact is not None and fact.kind == "co_purchase":
        text += f" {fact.count} shoppers who bought «{_t(fact.title)}» also bought this."
    elif fact is not None:
        text += f" Like «{_t(fact.title)}», it is about {_words(fact.words, 1)}."
    return text


def _joint_fact(group: Sequence[Evidence]) -> Evidence | None:
    """The group member whose fact a joint sentence adds: the most co-purchased, else the first sharing
    words with the item, else none."""
    bought = max((e for e in group if e.kind == "co_purchase"), key=lambda e: e.count or 0, default=None)
    return bought or next(
        (e for e in group if e.kind in ("shared_attributes", "text_nearness") and e.words), None
    )


def evidence_sentence(rec: Recommendation, scene: str | None = None) -> str:
    """The template explanation of a recommendation, built from its typed evidence only."""
    scene = scene or rec.scene
    if rec.prior:
        text = (
            f"Here on its own popularity in {scene} ({_shoppers(rec.buyers)} bought it): it ranks as high "
            "with no history at all, and nothing in yours moves it."
            if rec.buyers
            else f"Here on the {scene} scene's prior: it ranks as high with no history at all, and "
            "nothing in yours moves it."
        )
        return text + _peers(rec)
    if rec.source == "popular" or not rec.evidence:
        return f"Among the most bought items in {scene} (nothing in your history to go on)."
    if rec.evidence[0].joint:
        text = _joint(rec.evidence)
    else:
        text = _clause(rec.evidence[0], rec.method)
    if len(rec.evidence) > 1 and rec.evidence[1].kind != "nearest" and not rec.evidence[0].joint:
        text += _second(rec.evidence[1])
    return text + _peers(rec)


def _shoppers(n: int) -> str:
    return f"{n} shopper" if n == 1 else f"{n} shoppers"


def _peers(rec: Recommendation) -> str:
    if rec.peers is not None and rec.peers[0] >= 2:
        return f" {rec.peers[0]} of {rec.peers[1]} shoppers with a history like yours bought it."
    return ""


def sentence_shape(rec: Recommendation) -> str:
    """Which template `evidence_sentence` used: the kinds it was built from."""
    if rec.prior:
        parts = ["prior"]
    elif rec.source == "popular" or not rec.evidence:
        return "popular"
    elif rec.evidence[0].joint:
        fact = _joint_fact([e for e in rec.evidence if e.joint])
        parts = ["joint", fact.kind if fact is not None else "model"]
    else:
        parts = [rec.evidence[0].kind]
    if len(rec.evidence) > 1 and rec.evidence[1].kind != "nearest" and not rec.evidence[0].joint:
        parts.append(rec.evidence[1].kind)
    if rec.peers is not None and rec.peers[0] >= 2:
        parts.append("peers")
    return "+".join(parts)


def is_specific(rec: Recommendation) -> bool:
    """Whether the explanation names a concrete shared attribute, a count or a co-purchase."""
    return (
        any(e.kind in ("co_purchase", "shared_attributes", "text_nearness") for e in rec.evidence)
        or (rec.peers is not None and rec.peers[0] >= 2)
        or (rec.prior and bool(rec.buyers))
    )


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def allowed_numbers(rec: Recommendation, item_text: str = "") -> set[str]:
    """Every number the evidence of a recommendation carries."""
    numbers: set[str] = set()
    for e in rec.evidence:
        numbers |= set(NUMBER.findall(e.title))
        if e.count:
            numbers.add(str(e.count))
        if e.after:
            numbers.add(str(e.after))
        if e.share is not None:
            numbers.add(str(round(100 * e.share)))
    if rec.peers is not None:
        numbers |= {str(rec.peers[0]), str(rec.peers[1])}
    if rec.buyers:
        numbers.add(str(rec.buyers))
    return numbers | set(NUMBER.findall(rec.title)) | set(NUMBER.findall(item_text))


def _word_set(text: str) -> set[str]:
    """Words as `invented` compares them: lowercase, quotes and hyphens at the edges dropped."""
    return {w.strip("'-") for w in WORD.findall(text.lower())}


def invented(
    sentence: str,
    rec: Recommendation,
    other_titles: Sequence[str] = (),
    item_text: str = "",
    evidence_text: str = "",
) -> str | None:
    """What a sentence names that its evidence does not (None: nothing); `other_titles` are the user's
    history titles outside the evidence, `item_text` the recommended item's description and
    `evidence_text` the template sentence the model was asked to rephrase (built from the evidence
    alone, so its words are the evidence's)."""
    cited = [e.title for e in rec.evidence] + [rec.title]
    for quoted in QUOTED_TITLE.findall(sentence):
        q = _norm(quoted)
        if q and not any(q in _norm(t) or _norm(t) in q for t in cited):
            return f"an item not in the evidence: «{quoted}»"
    flat = f" {_norm(sentence)} "
    for title in other_titles:
        t = _norm(title)
        if len(t) >= 8 and f" {t} " in flat and not any(t == _norm(c) for c in cited):
            return f"a history item not in the evidence: «{title}»"
    numbers = allowed_numbers(rec, item_text)
    for number in NUMBER.findall(sentence):
        if number not in numbers and number.replace(",", "") not in numbers:
            return f"a number not in the evidence: {number}"
    vocabulary = set(GLUE) | {rec.scene} | {e.scene for e in rec.evidence}
    for text in [*cited, item_text, evidence_text]:
        vocabulary |= _word_set(text)
    for e in rec.evidence:
        vocabulary |= set(e.words)
    for word in sorted(_word_set(sentence), key=sentence.lower().find):
        stem = word.rstrip("s")
        if word not in vocabulary and stem not in vocabulary and f"{word}s" not in vocabulary:
            return f"an attribute not in the evidence: “{word}”"
    return None
