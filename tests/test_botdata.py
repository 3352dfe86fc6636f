"""bot/botdata.py: the bot's own data (answers for the buttons, feedback) in SQLite."""

from __future__ import annotations

import json

from bot.botdata import BotData, answer_from_record, answer_to_record

from .botharness import huge_answer


def test_answers_round_trip_through_bot_data(tmp_path):
    data = BotData(tmp_path / "b.sqlite")
    a = huge_answer("q?")
    assert answer_from_record(answer_to_record(a)) == a
    answer_id = data.save_answer(a, user_id=1, channel_id=2)
    assert data.answer(answer_id).more == a.more
    assert data.vote(answer_id, 7, 1) and data.vote(answer_id, 7, -1)
    assert not data.vote(answer_id + 1, 7, 1)
    rows = data.feedback()
    assert [(r["user_id"], r["vote"]) for r in rows] == [(7, -1)]
    assert json.loads(rows[0]["answer"])["question"] == "q?"
    data.close()
