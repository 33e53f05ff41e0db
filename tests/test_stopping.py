"""The shared stopping rule: EOS inside a set, new-turn markers, length, held-back text."""

from rainlocal.search.settings import StopRule
from rainlocal.search.stopping import Stopper

WORDS = {1: "Hello", 2: " there", 3: "\n", 4: "Human", 5: ":", 6: " more", 9: "<eos>"}


def _stopper(**kw):
    return Stopper(StopRule(**kw), lambda ts: "".join(WORDS[t] for t in ts), lambda t: t == 9)


def test_eos_inside_a_set_stops_and_cuts_there():
    s = _stopper(max_tokens=50)
    kept, text = s.add([1, 9, 2])
    assert kept == [1] and s.state.stop_reason == "eos" and s.state.text == "Hello"


def test_new_turn_marker_cuts_text_and_tokens():
    s = _stopper(max_tokens=50, stop_strings=["\nHuman:"])
    s.add([1, 2])
    kept, text = s.add([3, 4, 5, 6])
    assert s.state.stop_reason == "stop"
    assert s.state.text == "Hello there" and s.state.tokens == [1, 2] and kept == []


def test_possible_start_of_a_marker_is_held_back_until_decided():
    s = _stopper(max_tokens=50, stop_strings=["\nHuman:"])
    _, text = s.add([1, 3])
    assert text == "Hello"
    _, text = s.add([6])
    assert text == "\n more"


def test_length_limit_counts_answer_tokens():
    s = _stopper(max_tokens=3)
    kept, _ = s.add([1, 2, 6, 6])
    assert kept == [1, 2, 6] and s.state.stop_reason == "length"


def test_stop_rule_finds_the_earliest_stop_string():
    from rainlocal.search.settings import StopRule

    rule = StopRule(stop_strings=["\nUser:", "<|im_end|>", ""])
    assert rule.find("Hi.<|im_end|> and\nUser: more") == 3
    assert rule.find("no marker here") == -1
    assert StopRule().find("anything") == -1
