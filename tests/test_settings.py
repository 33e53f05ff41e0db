"""Strict RAIN settings: every value has a type and a range, and where a value comes from decides
which one wins (flags > --profile on the command line > config.toml [rain] > the default profile)."""

from __future__ import annotations

import pytest

from conftest import run_cli
from rainlocal.cli.options import rain_settings
from rainlocal.search.settings import PROFILES, RainSettings


@pytest.mark.parametrize("item, needle", [
    ("similarity=ture", "true or false"),
    ("set_lengths=1,0,4", "at least 1"),
    ("cand_temp=0", "above 0"),
    ("cand_temp=-1", "above 0"),
    ("T=0", "at least 1"),
    ("T=2.5", "whole number"),
    ("gamma=abc", "a number"),
    ("score=majority", "vote, soft, first, single"),
    ("no_such_key=1", "unknown RAIN setting"),
])
def test_a_bad_set_value_is_a_one_line_usage_error(item, needle, rl_home):
    # the settings are checked before any model is looked up, so no model is needed
    r = run_cli(["run", "-m", "no-such-model", "--set", item, "Hi"], env_home=rl_home, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("rainlocal: error:") and needle in r.stderr
    assert item.split("=")[0] in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("flag, value, needle", [
    ("--temp", "-3", "--temp must be 0 or more"),
    ("--top-p", "5", "--top-p must be in (0, 1]"),
    ("--top-p", "0", "--top-p must be in (0, 1]"),
    ("--top-k", "-1", "--top-k must be 0 or more"),
    ("-n", "0", "-n/--max-tokens must be at least 1"),
])
def test_a_sampling_flag_out_of_range_is_a_one_line_usage_error(flag, value, needle, rl_home):
    # the same bounds as the server's request schema: a value the API would refuse is not quietly used
    r = run_cli(["run", "-m", "no-such-model", "--vanilla", flag, value, "Hi"], env_home=rl_home, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"rainlocal: error: {needle}\n"


def test_a_sampling_default_out_of_range_in_config_is_a_config_error(rl_home):
    (rl_home / "config").mkdir(parents=True)
    (rl_home / "config" / "config.toml").write_text("[defaults]\ntop_p = 2\n")
    r = run_cli(["run", "-m", "no-such-model", "--vanilla", "Hi"], env_home=rl_home, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "rainlocal: error: [defaults] in config.toml: top_p must be in (0, 1]\n"


def test_a_bad_config_value_is_a_config_error(rl_home):
    (rl_home / "config").mkdir(parents=True)
    (rl_home / "config" / "config.toml").write_text("[rain]\nsimilarity = \"ture\"\n")
    r = run_cli(["run", "-m", "no-such-model", "Hi"], env_home=rl_home, timeout=60)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "config.toml [rain]" in r.stderr and "similarity" in r.stderr


@pytest.mark.parametrize("value, parsed", [("true", True), ("on", True), ("1", True), ("False", False),
                                           ("no", False), ("0", False)])
def test_booleans_accept_the_usual_spellings(value, parsed):
    assert RainSettings().with_overrides({"similarity": value}).similarity is parsed


def test_lists_and_numbers_are_parsed_from_strings():
    s = RainSettings().with_overrides({"set_lengths": "1, 3 5", "cand_temp": "0.5", "T": "7"})
    assert (s.set_lengths, s.cand_temp, s.T) == ((1, 3, 5), 0.5, 7)


def test_every_profile_is_within_the_ranges():
    for name, values in PROFILES.items():
        RainSettings().with_overrides(values)  # raises on an out-of-range constant


def _opts(**kw):
    return {"profile": None, "rain_set": (), **kw}


def test_config_rain_tunes_the_default_profile():
    rain = rain_settings(_opts(), "fast", {"rain": {"T": 9, "gamma": 0.5}})
    assert rain.T == 9 and rain.gamma == 0.5 and rain.loop == "draft"  # the rest is the fast profile's


def test_a_profile_on_the_command_line_beats_config_rain():
    rain = rain_settings(_opts(profile="fast"), "fast", {"rain": {"T": 9, "gamma": 0.5}})
    assert rain.T == PROFILES["fast"]["T"] == 6  # the profile sets T: its value wins
    assert rain.gamma == 0.5  # the profile leaves gamma alone: config.toml's value stays


def test_flags_beat_the_profile_and_config():
    rain = rain_settings(_opts(profile="adversarial", T=3, rain_set=("cand_temp=0.7",)), "adversarial",
                         {"rain": {"T": 9, "cand_temp": 1.5}})
    assert rain.T == 3 and rain.cand_temp == 0.7 and rain.T_m == PROFILES["adversarial"]["T_m"]


def test_without_anything_the_built_in_defaults_hold():
    assert rain_settings(_opts(), "paper", {}) == RainSettings()
