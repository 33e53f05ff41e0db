"""Peak RSS per strategy: the high-water mark restarts at ``reset_peak``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rainlocal.evals.memory import peak_rss_mb, reset_peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak is resettable on Linux only")
def test_a_reset_forgets_an_earlier_peak():
    assert reset_peak()
    big = np.ones(200 << 20, dtype=np.uint8)  # 200 MiB, touched
    del big
    before = peak_rss_mb()
    assert reset_peak()
    after = peak_rss_mb()
    assert before - after > 150
