"""Questions as people type them in chat, read as the sources would word them.

Discord users write "@citebot wut did boris say abt darroch?? 💀", "whos the uk amb", "hey
can u tell me y he quit". The bot's own words and tokens ("citebot", "1234567890" from a
mention, "wut", "abt", "tell me") are in no source: they would weigh as unknown words,
mislead the search and make an answerable question look unanswerable. `read_chat` drops a
leading mention, a greeting or request before the question ("hey", "can you tell me", "does
anyone know"), Discord markdown ("**", "_", "||", "`"), emoji and laughter, collapses
repeated punctuation, restores the apostrophe of contractions typed without one ("didnt",
"whats") and spells out common chat and news abbreviations ("abt", "w/", "ppl", "govt",
"pm"). Words are only replaced whole and in lower case (people who type "US" or "PM" in
capitals already wrote what the sources write). A question typed properly comes back
unchanged.
"""

from __future__ import annotations

import re
import unicodedata

# A mention of the bot, a user, a role or a channel, in Discord's wire form or as typed.
_LEADING_MENTION = re.compile(r"^\s*(?:<[@#][!&]?\d+>|@[\w.-]+)[\s,:]*")
# What people put before the question itself: a greeting (with the bot's name), a request.
# A greeting word counts only before punctuation or a lower-case word ("Hello Kitty" stays).
_WRAPPER = re.compile(
    r"^(?:(?i:hey|hi|hello|yo|ok|okay|um+|uh+|quick question|question)"
    r"(?:\s*[,:!.-]+\s*|\s+(?=[a-z]))(?:(?i:there|bot|citebot)\b[\s,:!.-]*)?)*"
    r"(?i:(?:(?:can|could|would|will) (?:you|u|ya|anyone|someone|somebody) )?"
    r"(?:pls |plz |please )?(?:tell|explain to|remind) (?:me|us)\b[\s,:]*"
    r"|(?:do|does) (?:you|u|ya|anyone|anybody|any1|someone|somebody) (?:know|remember)\b"
    r"[\s,:]*|i (?:wanna|want to|would like to|need to) know\b[\s,:]*"
    r"|i(?: was)? wonder(?:ing|ed)?\b[\s,:]*)?")
_WIRE_MENTION = re.compile(r"<[@#][!&]?\d+>")
_CUSTOM_EMOJI = re.compile(r"<a?:\w+:\d+>|(?<![\w:]):[a-z0-9_+-]+:(?![\w:])")
# Discord markdown around words: **bold**, *italic*, _italic_, __underline__, ~~strike~~,
# ||spoiler||, `code`, and a "> " quote at the start of a line.
_MARKDOWN = re.compile(r"\*\*|~~|\|\||`+|(?<![\w*])(?:\*|_{1,2})(?=[^\W_])|"
                       r"(?<=[^\W_])(?:\*|_{1,2})(?![\w*])|^\s*>+\s?", re.M)
_REPEATED = re.compile(r"([?!.,])(?:\s*[?!.,])+")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"(?<![\w'’/])[a-z][a-z0-9]*(?:/(?:o\b)?)?(?![\w'’])")

# Contractions typed without their apostrophe. Only forms that are not English words of
# their own ("its", "were", "ill", "shed", "well", "lets" stay as they are).
_CONTRACTIONS = {w.replace("'", ""): w for w in """
didn't doesn't don't isn't aren't wasn't weren't hasn't haven't hadn't won't wouldn't
couldn't shouldn't can't mustn't needn't what's who's where's when's how's why's that's
there's here's he's she's it'll they're you're i'm i've you've they've we've he'd they'd
you'd you'll they'll what're who're
""".split()}

# Chat shorthand and common news abbreviations, as whole lower-case words.
_ABBREVIATIONS = {
    "wut": "what", "wat": "what", "wht": "what", "whut": "what", "wot": "what",
    "wats": "what's", "wuts": "what's",
    "abt": "about", "bout": "about", "w/": "with", "w/o": "without", "ppl": "people",
    "ur": "your", "reps": "representatives", "dc": "washington",
    "yr": "year", "yrs": "years", "bc": "because", "cuz": "because", "coz": "because",
    "tho": "though", "thru": "through", "rn": "right now", "b4": "before",
    "govt": "government", "gov": "government", "dept": "department", "amb": "ambassador",
    "pres": "president", "admin": "administration", "pm": "prime minister",
    "fo": "foreign office", "wh": "white house", "acc": "according", "smth": "something",
    "shud": "should", "shld": "should", "cud": "could", "cld": "could", "wud": "would",
    "wld": "would", "gonna": "going to", "wanna": "want to", "gotta": "got to",
    "dunno": "don't know", "prolly": "probably", "bcuz": "because", "becuz": "because",
    "bcoz": "because", "tmrw": "tomorrow", "yday": "yesterday", "msg": "message",
    "convo": "conversation", "pic": "picture", "pics": "pictures", "rly": "really",
    "rlly": "really", "srsly": "seriously", "ofc": "of course", "sth": "something",
    "hrs": "hours", "mins": "minutes", "wk": "week", "wks": "weeks", "approx": "approximately",
    "intl": "international", "natl": "national",
}
# A final "g" dropped ("doin", "sayin"): the common verbs, as whole words ("begin", "within"
# and "cabin" are words of their own, so no rule on "-in" in general).
_ABBREVIATIONS.update({w[:-1]: w for w in """
doing going saying talking trying getting making looking thinking coming leaving quitting
being having taking giving telling calling working asking waiting running playing writing
nothing something anything everything
""".split()})
# Single letters stand for a word only in a question typed all in lower case, between words:
# "n" is also a variable, "y" a Spanish "and", "r" a letter someone asks about.
_LETTERS = {"n": "and", "r": "are", "u": "you", "y": "why", "w": "with"}
# Words that carry no question: laughter, politeness, hedges.
_FILLERS = frozenset("lol lmao lmfao rofl pls plz tbh imo imho ngl btw smh thx ty bruh omg "
                     "fr idk".split())


def _is_emoji(ch: str) -> bool:
    """Emoji and pictographs (not the degree sign or other symbols text uses)."""
    return (unicodedata.category(ch) in ("So", "Cs", "Co") and ord(ch) >= 0x2190) or \
        ch in "\u200d\ufe0f\ufe0e" or 0x1F3FB <= ord(ch) <= 0x1F3FF


def read_chat(question: str) -> str:
    """The question with chat typing spelt out; unchanged when typed properly."""
    text = _MARKDOWN.sub("", question)
    text = _LEADING_MENTION.sub("", text, count=1)
    text = _WRAPPER.sub("", text, count=1)
    text = _WIRE_MENTION.sub(" ", text)
    text = _CUSTOM_EMOJI.sub(" ", text)
    text = "".join(" " if _is_emoji(ch) else ch for ch in text)
    text = _REPEATED.sub(lambda m: m.group(1) if m.group(1) != "." else m.group(), text)

    chat_case = not any(ch.isupper() for ch in text)

    def spell(m: re.Match) -> str:
        word = m.group()
        if word in _LETTERS:
            alone = (m.start() == 0 or text[m.start() - 1].isspace()) and \
                re.match(r"\s+[a-z]", text[m.end():])
            return _LETTERS[word] if chat_case and alone else word
        if word in _FILLERS:
            return ""
        if word in _CONTRACTIONS:
            return _CONTRACTIONS[word]
        if word in ("pm", "am") and re.search(r"\d\s*$", text[: m.start()]):
            return word  # "3 pm" is a time
        return _ABBREVIATIONS.get(word, word)

    text = _WORD.sub(spell, text)
    text = _SPACES.sub(" ", text).strip()
    text = re.sub(r"\s+([?!.,])", r"\1", text)
    return text or question.strip()
