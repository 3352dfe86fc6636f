"""Questions typed the way people type in Discord, read as the sources would word them."""

from __future__ import annotations

import pytest

from index.chat_text import read_chat


@pytest.mark.parametrize("typed, meant", [
    ("@citebot wut did boris say abt darroch??", "what did boris say about darroch?"),
    ("<@1234567890> whos the uk amb", "who's the uk ambassador"),
    ("<@!42>, y did he quit 💀", "why did he quit"),
    ("what did trump tweet abt the pm lol 😂😂", "what did trump tweet about the prime minister"),
    ("didnt hunt back him w/ the cabinet!!!", "didn't hunt back him with the cabinet!"),
    ("r ppl angry n did the govt say smth",
     "are people angry and did the government say something"),
    ("whats the deal w trump :thinking:", "what's the deal with trump"),
    ("how many yrs was he in dc <:pepe:123456>", "how many years was he in washington"),
    ("hey can u tell me wut trump called him", "what trump called him"),
    ("Hi bot, does anyone know who quit?", "who quit?"),
    ("ok quick question: i wanna know when may steps down", "when may steps down"),
    ("wut did **trump** call _darroch_ ||lol||", "what did trump call darroch"),
    ("> who quit\nwhy tho", "who quit why though"),
    ("brooks said the govt has been doin wut for trump",
     "brooks said the government has been doing what for trump"),
    ("who did trump say he shud talk to", "who did trump say he should talk to"),
    ("who did he rly thank after 40 yrs", "who did he really thank after 40 years"),
])
def test_chat_typing_is_spelt_out(typed, meant):
    assert read_chat(typed) == meant


@pytest.mark.parametrize("question", [
    "Who were the announcers of Super Bowl 50?",  # "were" is no "we're"
    "What must be at 28°C?",  # the degree sign is no emoji
    "In what expression can one expect to find DTIME(n)",  # a variable, not "and"
    "In what year did Jeronimo de Ayanz y Beaumont patent a water pump?",
    "What happened at 3 pm on Monday?",  # a time, not a prime minister
    "What did the US ambassador say about the PM's letter?",
    "who defended Darroch?",
    "how did hunt react once darroch had resigned",
    "Hello Kitty's creator is who?",  # a greeting word that is part of a name
    "so what did he say?",  # "so" leads a follow-up
    "Silicates of magnesium and iron make up of the Earth's ___",  # a blank, not markdown
    "what is snake_case",
    "when did the talks begin within the cabin",  # words ending in "in" of their own
])
def test_questions_typed_properly_are_left_alone(question):
    assert read_chat(question) == question


def test_a_question_of_nothing_but_chat_noise_is_kept():
    assert read_chat("@citebot lol") == "@citebot lol"
    assert read_chat(" 💀 ") == "💀"
