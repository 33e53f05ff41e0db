"""The append-only JSONL logs (batch answers, eval results, conversations): one reader, one append."""

from __future__ import annotations

import json

from rainlocal.evals.runner import read_results
from rainlocal.jsonl import append_records, cut_torn_tail, read_log


def test_a_line_torn_by_a_kill_is_cut_off_and_the_next_append_starts_clean(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"id": 1}\n\n{"id": 2}\n{"id": 3, "re')
    assert read_log(log) == [{"id": 1}, {"id": 2}]
    assert log.read_text() == '{"id": 1}\n\n{"id": 2}\n'
    with open(log, "a", encoding="utf-8") as f:
        append_records(f, [{"id": 3}, {"id": "ü"}])
    assert read_log(log) == [{"id": 1}, {"id": 2}, {"id": 3}, {"id": "ü"}]
    assert log.read_text(encoding="utf-8").endswith('{"id": "ü"}\n')  # text as written, not escaped


def test_reading_stops_at_a_broken_line_and_cuts_it_with_what_follows(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"id": 1}\n{oops\n{"id": 2}\n')
    assert read_log(log, repair=False) == [{"id": 1}]
    assert log.read_text() == '{"id": 1}\n{oops\n{"id": 2}\n'  # without repair the file is left alone
    assert read_log(log) == [{"id": 1}] and log.read_text() == '{"id": 1}\n'


def test_a_missing_log_has_no_records(tmp_path):
    assert read_log(tmp_path / "none.jsonl") == []


def test_eval_results_keep_only_objects(tmp_path):
    log = tmp_path / "results.jsonl"
    log.write_text('{"kind": "answer"}\n[1, 2]\n{"kind": "check"}\n')
    assert read_results(log) == [{"kind": "answer"}, {"kind": "check"}]


def test_cut_torn_tail_keeps_complete_lines(tmp_path):
    log = tmp_path / "c.jsonl"
    log.write_text(json.dumps({"a": 1}) + "\n" + '{"b"')
    cut_torn_tail(log)
    assert log.read_text() == '{"a": 1}\n'
    cut_torn_tail(log)  # nothing torn: unchanged
    assert log.read_text() == '{"a": 1}\n'
