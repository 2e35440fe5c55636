"""Interleaved medians: how every ratio printed by bench/ is measured.

This machine's cores are shared, and the load on them drifts over seconds: a neighbour's test
run starts, the CPU clocks down, a cache is cold again.  Timing all of A's runs and then all of
B's measures that drift as much as A against B, and a "best of" for one side against a median
for the other compares a lucky moment with a typical one (that is how a 0.64-0.72x NOP chain
was once printed as 1.2x C).  So every comparison here:

- runs the sides in rounds, one run of each side per round, rotating which side goes first
  (AB, BA, AB, ... for two), so a slow stretch of the machine lands on every side alike;
- takes each side's median over the same rounds and divides median by median;
- keeps the ratio of each round, whose min-max range is printed beside the ratio, so a reader
  can see how much of a figure is noise (a range that straddles 1 means "no difference seen").

A side is a callable returning one sample (a rate, a time).  Sides time themselves in CPU time,
not wall time: on two cores shared with other work a run is preempted for as long as the
neighbours please, so wall time mostly measures them (a loaded machine once put the same C loop
at 0.8 M and 1.9 M NOPs/s a minute apart).  CPU time -- user and system, so the kernel's work
for a NOP inside io_uring_enter counts -- leaves the preemptions out; cache and frequency effects
of a busy machine stay, and interleaving spreads those over every side.  In-process sides read
`CPU_CLOCK` around the work; a fresh process is timed by `child_cpu` (or times itself with
CLOCK_THREAD_CPUTIME_ID when only its loop should count).
"""
from __future__ import annotations

import resource
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

# The calling thread's CPU time: the engines, the ring and native waits all run on it.
CPU_CLOCK = time.thread_time


def child_cpu(command: Sequence[str], **kwargs) -> tuple[float, str]:
    """Run `command` to its end; return the CPU seconds (user + system) it used and its stdout.
    Raises CalledProcessError if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, check=True, capture_output=True, text=True, **kwargs).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def interleave(sides: Mapping[str, Callable[[], float]], rounds: int,
               warmup: int = 0) -> dict[str, list[float]]:
    """Run every side once per round, round r starting at side r mod len(sides); return each
    side's samples in round order.  `warmup` rounds run first, in the same order, and are
    dropped (a first run that pays one-off costs: a compile cache, a page fault per page)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    names = list(sides)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(-warmup, rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            value = sides[name]()
            if r >= 0:
                samples[name].append(value)
    return samples


@dataclass(frozen=True)
class Comparison:
    """One side against a base over the same rounds: medians, their ratio, and the spread of the
    per-round ratios (the noise the ratio carries)."""
    median: float
    base_median: float
    ratio: float          # median / base_median
    low: float            # the smallest per-round ratio
    high: float           # the largest per-round ratio
    rounds: int

    def spread(self, digits: int = 2) -> str:
        return f"{self.low:.{digits}f}-{self.high:.{digits}f}"


def compare(side: Sequence[float], base: Sequence[float]) -> Comparison:
    """Compare two sides' samples taken in the same rounds (side[i] and base[i] in round i)."""
    if len(side) != len(base) or not side:
        raise ValueError(f"samples of the same rounds are needed, got {len(side)} and {len(base)}")
    per_round = [s / b for s, b in zip(side, base)]
    median, base_median = statistics.median(side), statistics.median(base)
    return Comparison(median, base_median, median / base_median, min(per_round), max(per_round),
                      len(side))


def spread(samples: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """A side's own min-max, for a figure printed without a base (a latency against a target)."""
    return f"{min(samples) * scale:.{digits}f}-{max(samples) * scale:.{digits}f}"
