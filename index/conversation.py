"""Follow-up questions: what a question that leans on the conversation should retrieve with.

After "what did Trump call Darroch?", "how old is he?" on its own finds nothing about
Darroch. A question is a follow-up when it refers back (he, she, they, it, this, that ...),
starts elliptically ("and ...", "what about ..."), or is a few words with no name in it.

A pronoun is resolved against both the earlier question and its answer: "he" or "she" after a
"who" question is the person its answer names ("who chaired the inquiry?" "Lord Smith ..."
"what did he conclude?" asks what Lord Smith concluded); "they" or "them" is the plural thing
the earlier question was about ("which paper printed the memos?" "when were they written?"
asks when the memos were written). The pronoun is replaced by what it stands for, and the
names the conversation is about are added: those of the latest earlier question that had any
(inherited through earlier follow-ups), then the first names of that question's answer. Names
are capitalised words, or words of the question that the answer spells capitalised, because
people type "what did trump call darroch?".

`ConversationStore` keeps each conversation's last few turns under a key the caller makes
(the bot uses (user, channel), so users never share one) and forgets it after a quiet spell.
Time is passed in; nothing here reads a clock, a config or the environment.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from .chat_text import read_chat
from .errors import CitebotError
from .records import Answer

ANSWER_NAMES = 2  # names taken from an answer: its subject, seldom more
MAX_CARRIED = 4  # names carried into a query; more would drown the question's own words

_WORD = re.compile(r"[A-Za-z][\w'’-]*")
_NAME_RUN = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:[A-Z][\w'’-]*))*")
# Words that refer back to something said before. "that" is also a conjunction ("did May say
# that ..."), so it counts only after a preposition ("about that"), first ("is that true?")
# or last ("why did he do that?").
_PRONOUNS = frozenset("he she him her his hers they them their theirs it its "
                      "this these those".split())
_THAT_REF = re.compile(r"\b(about|of|to|for|with|on|after|before|by|like)\s+that\b|"
                       r"^\s*(is|was|did|does|do|and)\s+that\b|\bthat\s*[?.!]*\s*$|"
                       r"^\s*(when|where|why|how)\s+(did|does|do|was|is|were|will|would|could|"
                       r"can|has|had)\s+that\b", re.I)
_ELLIPTIC = re.compile(r"^\s*(and|but|also|so|then|plus)\b[\s,]*", re.I)
_WHAT_ABOUT = re.compile(r"^\s*(?:and\s+|but\s+)?(what|how)\s+about\s+(?P<rest>.+?)\s*[?.!]*\s*$",
                         re.I)
_AND_ABOUT = re.compile(r"^\s*(?:and|but|also)\s+about\s+(?P<rest>.+?)\s*[?.!]*\s*$", re.I)
_WHO = re.compile(r"^\s*(?:and\s+|but\s+)?(who|whom|whose|which (?:people|person|\w+ers?)\b)",
                  re.I)
_PERSON = re.compile(r"\b(he|she|him|her|his|hers)\b", re.I)
_PLURAL = re.compile(r"\b(they|them|their|theirs)\b", re.I)
# "the leaked cables", "these memos", "Darroch's emails": a plural thing a later "they" stands
# for.
# Also a bare plural after "of", "what", "which" or "many": "what kind of documents got
# leaked?", "how many cables were there?".
_PLURAL_THING = re.compile(r"\b(?:the|these|those|his|her|their|its|our|\w+['’]s)\s+"
                           r"((?:[a-z][\w-]*\s+){0,2}[a-z][\w-]*[^s\W]s)\b|"
                           r"\b(?:of|what|which|many)\s+(?!(?:does|was|has|is|this|his|its|us|"
                           r"yes|thus|plus|always|perhaps|unless|whereas)\b)"
                           r"([a-z][\w-]*[^s\W]s)\b", re.I)
_OPENS_SENTENCE = re.compile(r"(?:^|[.!?:]['\"’”]?\s+|\n\s*)$")
_NOUN_NEXT = re.compile(r"\s+(?:of|from|over|after|before|about|for|in|on|at|to|with|by|into|"
                        r"across|among|between|under|within|without)\b")
_SAID_BY = re.compile(r"\b(?:said|says|told|wrote|tweeted|added|replied)\s+"
                      r"((?:[A-Z][\w'’-]+\s+){0,3}[A-Z][\w'’-]+)|"
                      r"((?:[A-Z][\w'’-]+\s+){0,3}[A-Z][\w'’-]+)\s+(?:said|says|told|wrote|"
                      r"tweeted|added|replied)\b")
_WHO_SAID = re.compile(r"^\s*(?:and\s+|but\s+|so\s+)?who\s+(?:\w+\s+)?(?:said|says|told|tells|"
                       r"wrote|writes|reported|reports|tweeted|claimed|warned|added|argued|"
                       r"called|described)\b", re.I)
_ACRONYM = re.compile(r"[A-Z]{2,}(?:[-/][A-Z]{2,})*")
_SHORT = 3  # words: "how old?", "why though?", "where exactly?"
# Capitalised words that are not what a conversation is about: question words, pronouns,
# titles, weekdays. Kept small: anything else capitalised may be a name.
_NOT_NAMES = frozenset("""
what who whom whose when where why how which whats is are was were do does did can could
would should shall might must has have had and but or nor so then also plus if the a an
i you he she it we they me him her us them my your his its our their this that these those
there here yes no not please tell explain describe give list show ok okay thanks hi hello hey
in on at of to for from with by as after before since during while although though however
meanwhile according despite until once now still even just only both all any some many
sir mr mrs ms dr lord lady monday tuesday wednesday thursday friday saturday sunday
somebody someone anybody anyone everybody everyone nobody something anything everything
nothing
""".split())


@dataclass(frozen=True)
class Turn:
    """One question of a conversation and what later questions may refer to."""

    question: str
    query: str = ""  # what was retrieved with: the question, or its follow-up rewrite
    names: tuple[str, ...] = ()  # what the question is about, including inherited names
    answer_names: tuple[str, ...] = ()  # the first names of its answer
    at: float = 0.0  # when it was asked, on the caller's clock


def names_in(text: str, lexicon: str = "") -> tuple[str, ...]:
    """Names in text, in order: runs of capitalised words, and words that lexicon
    (an answer, say) spells capitalised; question words, pronouns and titles dropped."""
    found: list[str] = []
    for m in _NAME_RUN.finditer(text):
        words = [w for w in m.group().split() if w.lower().strip("'’") not in _NOT_NAMES]
        # A sentence opening with a verb's -ing form ("Praising Darroch ...", "Following the
        # leak, ...") capitalises a word that is no name.
        # So does a lone word before "of", "from", "over" ...: a noun, not a name ("Extracts
        # of the leaked cables", "Memos from Kim Darroch"); a name there goes on with a verb
        # or another name ("Hunt said", "Jeremy Hunt").
        if words and words[0] == m.group().split()[0] and (
                re.fullmatch(r"[A-Z][a-z]{2,}ing", words[0]) or
                (words[0] == m.group() and _NOUN_NEXT.match(text, m.end()))) and \
                _OPENS_SENTENCE.search(text[:m.start()]):
            words.pop(0)
        # Initials of an abbreviation ("U.K.", "U.S."): no name.
        if len(words) == 1 and len(words[0]) == 1:
            words.pop(0)
        # Titles and possessives come first ("Britain's Prime Minister Theresa May"): the
        # last two words are the name.
        while len(words) > 1 and re.search(r"['’]s?$", words[0]):
            words.pop(0)
        name = re.sub(r"['’]s?$", "", " ".join(words[-2:]))
        if name:
            found.append(name)
    if lexicon:
        capital = {w.lower(): w for w in _WORD.findall(lexicon) if w[0].isupper()}
        run: list[str] = []  # "liam fox" is one name when the lexicon says "Liam Fox"
        end = 0
        for m in _WORD.finditer(text):
            w = m.group()
            if not (w[0].islower() and w in capital and w not in _NOT_NAMES):
                continue
            if run and not text[end:m.start()].isspace():
                found.extend(_joined(run, lexicon))
                run = []
            run.append(capital[w])
            end = m.end()
        found.extend(_joined(run, lexicon))
    return _dedupe(found)


def _joined(words: list[str], lexicon: str) -> list[str]:
    """Consecutive name words as one name when the lexicon writes them together."""
    if len(words) > 1 and " ".join(words) in lexicon:
        return [" ".join(words)]
    return words


def is_follow_up(question: str) -> bool:
    """Whether a question leans on what was asked before."""
    words = [w.lower() for w in _WORD.findall(question)]
    if not words:
        return False
    if _ELLIPTIC.match(question) or _WHAT_ABOUT.match(question):
        return True
    if any(w in _PRONOUNS for w in words) or _THAT_REF.search(question):
        return True
    return len(words) <= _SHORT and not names_in(question)


def _dedupe(names: Sequence[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for n in names:
        if n.lower() not in seen:
            seen.add(n.lower())
            out.append(n)
    return tuple(out)


def _topic(turns: Sequence[Turn]) -> Turn | None:
    """The latest turn that named something, else the latest turn."""
    return next((t for t in reversed(turns) if t.names or t.answer_names),
                turns[-1] if turns else None)


def _as_turns(context: Sequence[Turn | str]) -> list[Turn]:
    """Plain strings are earlier questions without answers."""
    turns: list[Turn] = []
    for item in context:
        turns.append(item if isinstance(item, Turn) else make_turn(item, None, turns))
    return turns


def resolve(question: str, context: Sequence[Turn | str]) -> tuple[str, tuple[str, ...]]:
    """The query to retrieve with, and the names the question is about (own, then carried)."""
    own = names_in(question)
    turns = _as_turns(context)
    topic = _topic(turns)
    typed, question = question, read_chat(question)
    if topic is None or not is_follow_up(question):
        return typed, own
    said = question.lower()
    carried = [n for n in _dedupe(topic.names + topic.answer_names[:ANSWER_NAMES])
               if not re.search(rf"\b{re.escape(n.lower())}\b", said)]
    echoed = _echo_about(question, topic)
    if echoed is not None:
        return echoed
    about = _WHAT_ABOUT.match(question)
    if about:
        # "what about Hunt?" asks the last question again of someone else: put the new name
        # where the old subject was ("what did Hunt call Darroch?").
        base = read_chat(topic.query or topic.question)
        rest = about.group("rest")
        subject = topic.names[0] if topic.names else None
        hit = re.search(rf"\b{re.escape(subject)}\b", base, re.I) if subject else None
        query = base[:hit.start()] + rest + base[hit.end():] if hit else f"{base} {rest}"
        names = _dedupe(names_in(rest) + tuple(n for n in topic.names if n != subject))
        return query, names[:MAX_CARRIED]
    stripped = _ELLIPTIC.sub("", question, count=1).strip() or question
    replaced = _replace_pronoun(stripped, topic)
    if replaced is not None:
        query, meant = replaced
        # The person the answer named now stands in the question: the earlier question's
        # other names would pull towards what it asked, not what this one asks of them.
        person = meant in topic.answer_names
        extra = "" if person else " ".join(n for n in carried if n.lower() not in query.lower())
        names = _dedupe(own + (meant,) * (meant[:1].isupper()) + topic.names)[:MAX_CARRIED]
        return (f"{query} {extra}" if extra else query), names
    if not (topic.names or topic.answer_names):
        # Nothing recognisably named ("what did the leak reveal?"): the earlier question's
        # own words are the best guess at the subject.
        return f"{stripped} {read_chat(topic.query or topic.question)}", own
    extra = " ".join(carried[:MAX_CARRIED])
    return (f"{stripped} {extra}" if extra else stripped), _dedupe(own + topic.names)[:MAX_CARRIED]


def _echo_about(question: str, topic: Turn) -> tuple[str, tuple[str, ...]] | None:
    """"and about Darroch?" after "what did Corbyn say about Boris?" asks it again about
    Darroch: the name after the earlier question's "about" is swapped. None when the
    question is not of that form or the earlier one has no name after "about"."""
    echo = _AND_ABOUT.match(question)
    if echo is None:
        return None
    base = read_chat(topic.query or topic.question)
    before = re.search(r"\babout\s+", base, re.I)
    if before is None:
        return None
    after = base[before.end():].lower()
    old = next((n for n in topic.names if re.match(rf"{re.escape(n.lower())}\b", after)
                and n.lower() not in echo.group("rest").lower()), None)
    if old is None:
        return None
    rest = echo.group("rest")
    query = base[:before.end()] + rest + base[before.end() + len(old):]
    names = _dedupe(names_in(rest) + tuple(n for n in topic.names if n != old))
    return query, names[:MAX_CARRIED]


def _replace_pronoun(question: str, topic: Turn) -> tuple[str, str] | None:
    """The question with its pronoun replaced by what it stands for, and that; None when
    the earlier turn offers nothing more specific than its names.

    "he"/"she" after a "who" question: the person its answer names. "they"/"them": the plural
    thing the earlier question was about, unless it named people and no thing.
    """
    person = _PERSON.search(question)
    if person and topic.answer_names:
        name = topic.answer_names[0]
        word = person.group().lower()
        text = f"{name}'s" if word in ("his", "hers") or \
            (word == "her" and _possessive_her(question, person.end())) else name
        return question[:person.start()] + text + question[person.end():], name
    plural = _PLURAL.search(question)
    thing = _PLURAL_THING.search(topic.query or topic.question)
    if plural and thing:
        text = thing.group(0) if thing.group(1) else thing.group(2)
        if plural.group().lower() in ("their", "theirs"):
            text += "'"
        return question[:plural.start()] + text + question[plural.end():], \
            thing.group(1) or thing.group(2)
    return None


def _possessive_her(text: str, end: int) -> bool:
    """Whether "her" is followed by a noun ("her letter") rather than ending a phrase."""
    after = _WORD.match(text, end + 1) if end < len(text) else None
    return bool(after) and after.group().lower() not in _NOT_NAMES


def follow_up_query(question: str, context: Sequence[Turn | str]) -> str:
    """The query to retrieve with: the question itself unless it is a follow-up."""
    return resolve(question, context)[0]


def make_turn(question: str, answer: Answer | None, context: Sequence[Turn | str],
              at: float = 0.0) -> Turn:
    """The turn a question (asked after context) adds to the conversation."""
    query, names = resolve(question, context)
    text = answer.answer if answer is not None and answer.answered else ""
    if text:
        names = _dedupe(names + names_in(question, lexicon=text))[:MAX_CARRIED]
    # Only the answer to a "who" question names what the next question may be about ("who
    # defended Darroch?" "what did she say?"); other answers name people in passing.
    # Acronyms ("UK-US", "BBC") are seldom the "he" or "she" a next question means. Asked
    # who said or reported something, whoever the answer quotes ('..., said Al Jazeera's
    # Laurence Lee') comes first: the speaker, not who the words are about.
    said = _SAID_BY.search(text) if _WHO_SAID.match(query) else None
    speaker = names_in(said.group(1) or said.group(2)) if said else ()
    answer_names = tuple(n for n in _dedupe(speaker + names_in(text)) if n.lower() not in
                         {x.lower() for x in names} and not _ACRONYM.fullmatch(n)
                         )[:ANSWER_NAMES] if _WHO.match(query) else ()
    return Turn(question=question, query=query, names=names, answer_names=answer_names, at=at)


class ConversationStore:
    """The last `turns` turns of each conversation, forgotten after `idle` quiet seconds.

    Keys are the caller's: the bot uses (user id, channel id), so two users in one channel,
    or one user in two channels, never see each other's context.
    """

    def __init__(self, turns: int = 3, idle: float = 600.0, max_conversations: int = 10_000):
        if turns < 0 or idle <= 0 or max_conversations < 1:
            raise CitebotError("conversation settings: turns must be 0 or more and the idle "
                               "time more than 0")
        self.turns, self.idle, self.max_conversations = turns, idle, max_conversations
        self._turns: OrderedDict[Hashable, tuple[Turn, ...]] = OrderedDict()

    def context(self, key: Hashable, now: float) -> tuple[Turn, ...]:
        """The conversation's recent turns; none once it has been idle too long."""
        turns = self._turns.get(key, ())
        if turns and now - turns[-1].at > self.idle:
            del self._turns[key]
            return ()
        return turns

    def add(self, key: Hashable, turn: Turn) -> None:
        if self.turns == 0:
            return
        self._turns[key] = (self.context(key, turn.at) + (turn,))[-self.turns:]
        self._turns.move_to_end(key)
        while len(self._turns) > self.max_conversations:  # the longest idle go first
            self._turns.popitem(last=False)

    def remember(self, key: Hashable, question: str, answer: Answer | None,
                 now: float) -> Turn:
        """Add the turn of a question just answered; returns it."""
        turn = make_turn(question, answer, self.context(key, now), at=now)
        self.add(key, turn)
        return turn

    def __len__(self) -> int:
        return len(self._turns)
