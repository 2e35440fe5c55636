"""bench/measure.py: the order sides run in, and the arithmetic behind every ratio bench/ prints.
No clock is read: the sides return known samples."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_measure():
    spec = importlib.util.spec_from_file_location("bench_measure_for_tests", BENCH / "measure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module        # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


measure = load_measure()


def recorder(names, values=None):
    """Sides that log their calls in order and return values from `values[name]` in turn."""
    log = []
    sides = {}
    for name in names:
        queue = list((values or {}).get(name, []))

        def side(name=name, queue=queue):
            log.append(name)
            return queue.pop(0) if queue else float(len(log))
        sides[name] = side
    return sides, log


def test_two_sides_alternate_who_goes_first():
    sides, log = recorder("AB")
    samples = measure.interleave(sides, 4)
    assert "".join(log) == "ABBAABBA"
    assert samples == {"A": [1.0, 4.0, 5.0, 8.0], "B": [2.0, 3.0, 6.0, 7.0]}


def test_three_sides_rotate_and_every_side_runs_once_per_round():
    sides, log = recorder("ABC")
    measure.interleave(sides, 4)
    assert "".join(log) == "ABC" "BCA" "CAB" "ABC"


def test_warmup_rounds_run_first_in_the_same_rotation_and_are_dropped():
    sides, log = recorder("AB", {"A": [100, 1, 2, 3], "B": [200, 10, 20, 30]})
    samples = measure.interleave(sides, 3, warmup=1)
    assert len(log) == 8
    assert samples == {"A": [1, 2, 3], "B": [10, 20, 30]}


def test_no_rounds_is_an_error():
    with pytest.raises(ValueError, match="at least 1"):
        measure.interleave({"A": lambda: 1.0}, 0)


def test_compare_divides_median_by_median_and_keeps_per_round_spread():
    # per-round ratios 0.25, 4, 3, 0.25, 2 (their median is 2); the figure is median over
    # median, 3 / 4
    side = [1.0, 8.0, 3.0, 2.0, 10.0]
    base = [4.0, 2.0, 1.0, 8.0, 5.0]
    c = measure.compare(side, base)
    assert (c.median, c.base_median, c.ratio) == (3.0, 4.0, 0.75)
    assert (c.low, c.high) == (0.25, 4.0)
    assert c.rounds == 5
    assert c.spread() == "0.25-4.00"


def test_compare_even_rounds_take_the_middle_mean():
    c = measure.compare([1.0, 2.0, 4.0, 9.0], [1.0, 1.0, 1.0, 1.0])
    assert c.median == 3.0 and c.base_median == 1.0 and c.ratio == 3.0
    assert c.spread(1) == "1.0-9.0"


def test_a_best_run_cannot_flatter_the_ratio():
    # the shape: one lucky run of ours; best-of against median would say 1.2x
    ours = [0.62, 0.70, 1.20, 0.66, 0.68]
    c_side = [1.0, 1.0, 1.0, 1.0, 1.0]
    c = measure.compare(ours, c_side)
    assert c.ratio == pytest.approx(0.68)
    assert c.high == pytest.approx(1.2) and c.low == pytest.approx(0.62)


def test_compare_refuses_samples_of_different_rounds():
    with pytest.raises(ValueError, match="same rounds"):
        measure.compare([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same rounds"):
        measure.compare([], [])


def test_spread_of_one_side_scales_and_rounds():
    assert measure.spread([0.0123, 0.0101, 0.0150], scale=1e3, digits=1) == "10.1-15.0"
