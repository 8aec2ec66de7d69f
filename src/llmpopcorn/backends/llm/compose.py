"""The offline stand-in's wording: a query's subject, titles that fit without cutting a
phrase, a post caption and hashtags. Fixed templates, chosen by the seed; no model.

A title is never cut mid-phrase: each pattern takes the whole subject when it fits in
:data:`TITLE_MAX_CHARS`, else the longest start of the subject that ends before a new
phrase ("... in Attack on Titan", "..., and ...") and still fits; a pattern with no room for
a whole phrase is not used. Consecutive seeds start at consecutive patterns, so variants
(seeds s, s+1, ...) and "another take" get different words, not only different colours.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from llmpopcorn.core.types import CAPTION_MAX_CHARS, MAX_HASHTAGS, TITLE_MAX_CHARS, as_hashtag

# Leading instructions that say what to do rather than what the video is about.
_LEAD = re.compile(
    r"^(please\s+)?(create|make|generate|produce|design|film|shoot|animate|summari[sz]e|show|"
    r"write|build|compose|craft|edit|record|present|explain|explore|analy[sz]e|showcase|"
    r"compile|highlight|capture|depict|illustrate|tell|imagine|visuali[sz]e|give|discuss|"
    r"compare|rank|review|list|share|document|demonstrate|teach|reveal|recreate|"
    r"break\s+down)\b"
    r"(\s+(me|us)\b)?(\s+(a|an|the|some)\b)?"
    r"(\s+(short|quick|fun|funny|3-second|viral|cinematic|dramatic|emotional|dynamic|"
    r"creative|brief|vibrant|relaxing|satisfying|step-by-step|detailed|visual|humorous|"
    r"nostalgic|stunning|beautiful|playful|heartwarming|behind-the-scenes|time-lapse)\b)*"
    r"(\s+(video|clip|montage|compilation|short|reel|animation|story|skit|vlog|tutorial|"
    r"guide|breakdown|countdown|highlight\s+reel|recap|series)\b)?"
    r"(\s+(about|of|on|showing|showcasing|exploring|analy[sz]ing|featuring|where|that|in which|"
    r"highlighting|depicting|comparing|explaining|summari[sz]ing|reviewing|ranking))?\s*",
    re.IGNORECASE,
)

#: title patterns; each adds enough words of its own that two of them on one subject are
#: not near-duplicates by the variants' measure (core.copycheck.similar_title)
TITLE_PATTERNS = (
    "{subject}",
    "Wait for it: {subject}",
    "Nobody expected this: {subject}",
    "{subject} in 3 seconds",
    "{subject}, but make it epic",
    "Watch till the end: {subject}",
    "The truth about {subject}",
    "3 seconds of {subject}",
    "POV: you discover {subject}",
    "Rate this from 1 to 10: {subject}",
)
CAPTIONS = (
    "{Subject}, in three seconds. Would you watch it twice?",
    "Nobody was ready for {subject}. Tell us what you would do next!",
    "{Subject}: blink and you miss it. Which moment got you?",
    "We had to share {subject}. Tag someone who needs to see this!",
    "Three seconds of {subject}. Follow for more like this!",
    "Have you ever seen {subject}? Let us know in the comments.",
)
#: a question-hook caption for PE runs whose popular references ask questions
QUESTION_CAPTIONS = (
    "Have you ever seen {subject}? Let us know in the comments.",
    "Would you try {subject}? Tell us below!",
)

#: ... and, as the last resort, before a verb
_AUXILIARIES = frozenset(
    "is are was were be being been has have had can could will would should may might must".split()
)
#: a title may be cut before these words: each starts a phrase of its own ...
_PHRASE_STARTS = frozenset(
    """in on at with while when where who that which for from during after before as and but
    or like by through throughout using across over under via without within into versus vs
    including such featuring showing starring""".split()
)
#: ... and, when nothing longer fits, before these (a shorter, still whole, phrase)
_WEAK_STARTS = frozenset("of to about between among".split())
_WH = frozenset("how why what when where which who".split())
#: a kept phrase never ends on these
_NO_END = (
    frozenset(
        """a an the of and or but to his her its their my your our this that these those
    between vs versus from with in on at by for""".split()
    )
    | _AUXILIARIES
)
#: modifiers a subject can lose and still say what it is about
_MODIFIERS = frozenset(
    """traditional different vibrant major creative simple greatest best most iconic famous
    popular classic modern unique various beautiful amazing epic funny funniest cute quick easy
    healthy delicious perfect ultimate essential key important top biggest small big huge tiny
    little new old ancient favourite favorite stunning colorful colourful elaborate detailed
    professional authentic local global daily everyday common hidden secret surprising
    unexpected dramatic emotional memorable legendary powerful effective innovative cozy fresh
    giant full entire whole real true specific complex rare weird strange crazy wild luxurious
    fancy dynamic intense pivotal recent seasonal cultural historical visual minimalist busy
    several many some all""".split()
)
#: a subject's tail after these is a phrase of its own ("making ...", "the Roman Empire")
_TAIL_AFTER = frozenset("of for about on in with from into behind".split())
#: common verbs (base forms); their finite forms end a topic (see is_verb)
_VERBS = frozenset(
    """meet learn record create explore show transform teach tackle foster approach inspire
    change use shape turn reveal discover find build cook play fight win lose break become
    react respond perform dance sing fail try cry laugh jump fly swim run walk ride climb
    chase catch eat drink open close wake sleep travel visit explain compare influence
    redefine define adapt portray capture depict evolve grow improve reach save help hit
    celebrate surprise convey impact affect feature combine blend mix prepare transport
    rescue deliver flip escape survive defeat destroy attack protect""".split()
)
_DEMONYM_ENDINGS = ("ese", "an", "ish", "ian", "ch", "Thai", "Greek", "Swiss")
#: vague heads whose meaning is in the clause after them: "something that makes people
#: feel nostalgic" can also be said "what makes people feel nostalgic"
_VAGUE_HEADS = frozenset(
    """something anything everything things stuff moments ideas places people""".split()
)
#: words that say nothing about a topic (query hashtags, the stand-in's PE keywords)
STOPWORDS = frozenset(
    """the and for with this that you your are was were have has had not but all can will
    just what when who how why its his her they them their our out get got one too very from
    into onto over about after before more most some such than then there these those also here
    where which while would could should been being did does doing don let video videos really
    like make made new day time people see look want know good come go back still only even
    much many way well using used best top ways unique different various across through
    between among within learns learn tries try gets makes takes goes flips explained
    something anything everything things stuff thing""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]{2,}")


def subject_of(query: str) -> str:
    """The topic of a query with instructions like "Create a video about" removed."""
    text = " ".join(query.split()).strip(" .!?")
    stripped = _LEAD.sub("", text, count=1).strip(" .!?:,")
    return stripped or text


def stable_int(key: str, salt: str) -> int:
    """A number from ``key`` that is the same in every process (not ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{salt}|{key}".encode()).digest()[:4], "big")


def pick(options: Sequence[str], key: str, salt: str) -> str:
    return options[stable_int(key, salt) % len(options)]


def rotate(items: Sequence[str], start: int) -> list[str]:
    """``items`` starting at ``start`` (modulo), wrapping round: consecutive starts give
    different first items."""
    if not items:
        return []
    start %= len(items)
    return [*items[start:], *items[:start]]


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def fit_title(text: str, limit: int = TITLE_MAX_CHARS) -> str:
    """Shorten at a word boundary to at most ``limit`` characters (the last resort, for a
    subject with no whole phrase that fits)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,:;-")
    return (cut or text[: limit - 1]) + "…"


def whole_phrase(subject: str, room: int) -> str | None:
    """``subject`` if it fits in ``room`` characters, else its longest start (two words or
    more) that ends before a new phrase and fits; None when there is none. Cuts before a
    preposition or conjunction first, then before "of"/"to", then before a verb such as
    "are" (dropping a leading "how"/"why": "traditional cooking techniques")."""
    subject = " ".join(subject.split())
    if len(subject) <= room:
        return subject
    words = subject.split()
    levels = (_PHRASE_STARTS, _PHRASE_STARTS | _WEAK_STARTS, _AUXILIARIES)
    for level, starts in enumerate(levels):
        best = None
        for i in range(2, len(words)):
            if not _boundary(words, i, starts):
                continue
            kept = words[:i]
            if level == 2 and kept[0].lower() in _WH:
                kept = kept[1:]
            prefix = " ".join(kept).rstrip(",;:-– ")
            last = prefix.split()[-1].lower() if prefix else ""
            if len(kept) >= 2 and len(prefix) <= room and last not in _NO_END:
                best = prefix  # later cuts are longer: keep the longest that fits
        if best:
            return best
    return None


def _boundary(words: list[str], i: int, starts: frozenset[str]) -> bool:
    """Whether a phrase starts at ``words[i]``. "inspired by ..." is one phrase."""
    word, before = words[i].lower(), words[i - 1].lower()
    if word == "by" and before.endswith("ed"):
        return False
    return word in starts or before.endswith((",", ";", ":"))


def subject_forms(subject: str) -> list[tuple[str, str]]:
    """Ways to say the subject, each a whole phrase, with their kind: ``"whole"`` (the
    subject itself and, for "something that ..." (a vague head and a clause), "what ...");
    ``"reduced"`` (without its common modifiers: "assembling a vibrant charcuterie board" ->
    "assembling a charcuterie board"; or what follows a preposition: "process of making
    Mexican tamales" -> "making Mexican tamales"); ``"topic"`` (its topics of two words or
    more: "Dragon Ball", "flavor profiles"; the last resort)."""
    subject = " ".join(subject.split())
    words = subject.split()
    whole = [subject]
    if len(words) > 2 and words[1].lower() in ("that", "which", "who"):
        if words[0].lower() in _VAGUE_HEADS:
            whole.append(" ".join(["what", *words[2:]]))
    reduced = []
    plain = _articles([w for w in words if w.lower() not in _MODIFIERS])
    if len(plain) >= 2 and plain != words:
        reduced.append(" ".join(plain))
    for form in whole + reduced:
        parts = form.split()
        for i, word in enumerate(parts[:-2]):
            tail = parts[i + 1 :]
            if word.lower() in _TAIL_AFTER and tail[0].lower() not in STOPWORDS | _NO_END:
                reduced.append(" ".join(tail))
    topics = [t for t in topical_phrases(subject) if " " in t]
    forms: list[tuple[str, str]] = []
    for kind, group in (("whole", whole), ("reduced", reduced), ("topic", topics)):
        for form in group:
            if form not in [f for f, _ in forms]:
                forms.append((form, kind))
    return forms


def _articles(words: list[str]) -> list[str]:
    """ "a" / "an" agreeing with the next word again after a modifier was dropped."""
    fixed = list(words)
    for i, word in enumerate(fixed[:-1]):
        if word.lower() in ("a", "an"):
            vowel = fixed[i + 1][:1].lower() in "aeiou"
            fixed[i] = ("an" if vowel else "a") if word.islower() else ("An" if vowel else "A")
    return fixed


def title_options(
    subject: str, patterns: Sequence[str], tag: str = "fyp", limit: int = TITLE_MAX_CHARS
) -> dict[str, list[str]]:
    """Titles by how much of the subject they say: ``"whole"`` (all of it), ``"short"``
    (a shortened or reduced whole phrase), ``"topic"`` (one of its topics), each in the
    order of ``patterns``; a pattern with no room for a whole phrase gives none."""
    options: dict[str, list[str]] = {"whole": [], "short": [], "topic": []}
    seen: set[str] = set()
    for form, kind in subject_forms(subject):
        for pattern in patterns:
            room = limit - len(pattern.format(subject="", tag=tag))
            phrase = whole_phrase(form, room) if room >= 12 else None
            if phrase is None:
                continue
            title = capitalise(pattern.format(subject=phrase, tag=tag))
            if title not in seen:
                seen.add(title)
                group = "whole" if kind == "whole" and phrase == form else kind
                options["short" if group == "reduced" else group].append(title)
    return options


def choose_title(
    ordered: Sequence[str], acceptable: Callable[[str], bool], *, skip: int = 0
) -> str | None:
    """The first acceptable title of ``ordered`` from position ``skip`` on (wrapping)."""
    for title in rotate(ordered, skip):
        if acceptable(title):
            return title
    return None


def compose_caption(subject: str, key: str, *, question: bool = False) -> str:
    """One or two sentences for viewers about ``subject`` (never a generation prompt)."""
    templates = QUESTION_CAPTIONS if question else CAPTIONS
    room = CAPTION_MAX_CHARS - max(len(t) for t in templates)
    phrase = whole_phrase(subject, room) or fit_title(subject, room)
    template = pick(templates, key, "caption")
    return template.format(subject=phrase, Subject=capitalise(phrase))


def is_verb(word: str) -> bool:
    """Whether ``word`` is a common verb in a finite or past form ("meets", "records",
    "inspired"): a topic ends before it ("puppy meets" is not a topic)."""
    word = word.lower()
    return any(
        word == base + ending
        for ending in ("s", "es", "d", "ed")
        for base in (word[: -len(ending)],)
        if word.endswith(ending) and base in _VERBS
    ) or (word.endswith("ies") and word[:-3] + "y" in _VERBS)


def topical_phrases(subject: str) -> list[str]:
    """The subject's topics, as hashtag material: names first ("Dragon Ball", "League of
    Legends", "Forza Horizon 5"), then runs of content words (the last two words of a
    longer run: "seafood platter"), then single content words, each group in order."""
    words = [w.replace("’", "'") for w in re.findall(r"[\w'’-]+", subject)]
    names, runs, singles = [], [], []
    run: list[str] = []

    def close() -> None:
        if run:
            (runs if len(run) > 1 else singles).append(" ".join(run[-2:]))
            run.clear()

    def content(word: str) -> bool:
        return len(word) >= 3 and word.lower() not in STOPWORDS | _NO_END and not is_verb(word)

    i = 0
    while i < len(words):
        word = words[i].removesuffix("'s")
        # a nationality before a content word describes it ("Japanese cheesecake")
        describes = (
            word.endswith(_DEMONYM_ENDINGS)
            and i + 1 < len(words)
            and content(words[i + 1])
            and not words[i + 1][:1].isupper()
        )
        proper = word[:1].isupper() and word.lower() not in STOPWORDS | _NO_END
        if proper and (i > 0 or len(words) > 1) and not describes:
            name = [word]
            while i + 1 < len(words):
                nxt = words[i + 1].removesuffix("'s")
                joiner = nxt.lower() in ("of", "the") and i + 2 < len(words)
                if nxt[:1].isupper() or nxt.isdigit():
                    name.append(nxt)
                    i += 1
                elif joiner and words[i + 2][:1].isupper():
                    name += [nxt, words[i + 2].removesuffix("'s")]
                    i += 2
                else:
                    break
            close()
            names.append(" ".join(name))
        elif not content(word):
            close()
        else:
            run.append(word)
        i += 1
    close()
    return list(dict.fromkeys(names + runs + singles))


def compose_hashtags(subject: str, category: str | None, category_tags: Sequence[str]) -> list[str]:
    """3-6 hashtags: the subject's topics (at most three), then up to two hashtags that
    popular videos of the run's category use (those naming a topic of the subject first),
    then the category's name when the corpus gave none. Never the title's own words."""
    topics = topical_phrases(subject)
    wanted = {w.lower() for t in topics for w in t.split()}
    community = sorted(
        category_tags,
        key=lambda t: not any(w.lower() in wanted for w in re.findall(r"[A-Z][a-z0-9]*", t)),
    )  # stable: within each group the corpus' order (most used first) stays
    tags = [as_hashtag(t) for t in topics[:3]] + list(community[:2])
    if category and not category_tags:
        tags.append(as_hashtag(category))
    if len([t for t in tags if t]) < 3:
        tags += [as_hashtag(category or ""), "#fyp", "#viral"]
    unique, seen = [], set()
    for tag in tags:
        if tag and tag.lower() not in seen:
            seen.add(tag.lower())
            unique.append(tag)
    return unique[:MAX_HASHTAGS]
