"""Finding object mentions in captions: lower-cased words, singular forms and a longest-match vocabulary.

Shared by CHAIR (:mod:`.chair`) and the COCO synonym table (:mod:`.coco_synonyms`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")
_IRREGULAR_PLURALS = {
    "people": "person", "children": "child", "mice": "mouse", "geese": "goose", "teeth": "tooth",
    "feet": "foot", "oxen": "ox", "dice": "die", "cacti": "cactus", "skies": "sky", "species": "species",
    "series": "series",
}


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words; punctuation, hyphens and apostrophes separate words."""
    return _WORD.findall(text.lower())


def singular_candidates(word: str) -> list[str]:
    """The word itself, then the singular forms it may have (irregulars, else simple English rules)."""
    if word in _IRREGULAR_PLURALS:
        return [word, _IRREGULAR_PLURALS[word]]
    candidates = [word]
    if word.endswith("children"):
        candidates.append(word[:-3])
    if word.endswith("men"):
        candidates.append(word[:-3] + "man")
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("ves"):
        candidates += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("s") and not word.endswith("ss"):
        candidates.append(word[:-1])
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh", "o")):
        candidates.append(word[:-2])
    return [candidate for candidate in dict.fromkeys(candidates) if len(candidate) >= 2 or candidate == word]


@dataclass(frozen=True)
class ObjectMention:
    """An object found in a caption: the words as written, its category and its first word's index."""

    surface: str
    category: str
    start: int


class ObjectVocabulary:
    """Maps surface words and multi-word phrases to canonical object categories.

    ``phrases`` maps a phrase to its category, or to ``None`` for phrases that are not objects but
    contain one ("train track", "ski slope"): longest-match-first then stops the shorter hit.
    Phrases are tokenized like captions; a plural last word is matched through ``singular_candidates``.
    """

    def __init__(self, phrases: Mapping[str, str | None]):
        self._phrases: dict[tuple[str, ...], str | None] = {}
        for phrase, category in phrases.items():
            words = tuple(tokenize(phrase))
            if not words:
                raise ValueError(f"empty phrase {phrase!r} in the vocabulary")
            self._phrases[words] = category
        self.categories: tuple[str, ...] = tuple(sorted({c for c in phrases.values() if c is not None}))
        self.max_phrase_words = max((len(words) for words in self._phrases), default=1)

    @classmethod
    def from_synonyms(cls, synonyms: Mapping[str, Iterable[str]],
                      extra_phrases: Mapping[str, str | None] | None = None) -> ObjectVocabulary:
        """Build from ``{category: synonyms}``; a synonym listed under two categories is an error."""
        phrases: dict[str, str | None] = {}
        for category, words in synonyms.items():
            for phrase in (category, *words):
                key = " ".join(tokenize(phrase))
                if phrases.get(key, category) != category:
                    raise ValueError(f"{phrase!r} is listed under both {phrases[key]!r} and {category!r}")
                phrases[key] = category
        for phrase, category in (extra_phrases or {}).items():
            if category is not None and category not in synonyms:
                raise ValueError(f"extra phrase {phrase!r} points at unknown category {category!r}")
            phrases[" ".join(tokenize(phrase))] = category
        return cls(phrases)

    def __len__(self) -> int:
        return len(self._phrases)

    def _match(self, words: Sequence[str]) -> tuple[bool, str | None]:
        *head, last = words
        for candidate in singular_candidates(last):
            key = (*head, candidate)
            if key in self._phrases:
                return True, self._phrases[key]
        return False, None

    def lookup(self, phrase: str) -> str | None:
        """The category of a whole phrase ("Traffic lights" -> "traffic light"), or None."""
        words = tokenize(phrase)
        return self._match(words)[1] if words else None

    def find(self, caption: str) -> list[ObjectMention]:
        """Every object mention in a caption, in order, longest phrase first at each position."""
        words = tokenize(caption)
        mentions, position = [], 0
        while position < len(words):
            for length in range(min(self.max_phrase_words, len(words) - position), 0, -1):
                found, category = self._match(words[position:position + length])
                if found:
                    if category is not None:
                        mentions.append(ObjectMention(" ".join(words[position:position + length]),
                                                      category, position))
                    position += length
                    break
            else:
                position += 1
        return mentions


def extract_objects(caption: str, vocab: ObjectVocabulary, *, unique: bool = False) -> list[str]:
    """Categories mentioned in a caption, in order; ``unique=True`` keeps each category's first mention."""
    categories = [mention.category for mention in vocab.find(caption)]
    return list(dict.fromkeys(categories)) if unique else categories
