"""bench/run.py's results: what one case runs (Case) and what one measured run recorded (Run), as
stored in bench/out/<tag>/results.json; shared by the harness (bench/run.py) and the report
(bench/report.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 1024 ** 3


@dataclass
class Case:
    name: str
    preset: str
    res: int
    n: int                      # images per path per round
    batches: list[int]
    paths: list[str]            # a.emb a.heat b bf c d e.emb e.heat
    rounds: int
    warmup_rounds: int = 0      # extra leading rounds, discarded
    bf_batches: list[int] | None = None  # batch sizes for bf (default: the largest of `batches`)
    configs: list[tuple[str, int]] | None = None  # explicit (path, batch) list, instead of paths × batches


def case_configs(case: Case) -> list[tuple[str, int]]:
    """The (path, batch size) runs of one round, in order."""
    if case.configs:
        return [(p, int(b)) for p, b in case.configs]
    configs: list[tuple[str, int]] = []
    for p in case.paths:
        if p.startswith("a."):
            configs.append((p, 1))
        elif p == "bf":
            configs += [(p, b) for b in (case.bf_batches or [max(case.batches)])]
        else:
            configs += [(p, b) for b in case.batches]
    return configs


DISTURBED = 0.10  # share of the CPUs taken by other processes above which a run counts as disturbed

ALL_PATHS = ["a.emb", "a.heat", "a.loop", "b", "bf", "c", "d", "e.emb", "e.heat", "c8", "e8.emb"]
DEFAULT_PATHS = ["a.emb", "a.heat", "b", "bf", "c", "d", "e.emb", "e.heat"]


@dataclass
class Run:
    case: str
    path: str
    batch: int
    round: int
    images: int
    wall_s: float
    lat: list[float]
    rss: dict[str, int]
    breakdown: dict[str, Any] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)
    gpu_peak_bytes: int | None = None
    gpu_util: float | None = None
    foreign: float = 0.0        # share of all CPUs used by processes outside the harness meanwhile
    attempts: int = 1

    @property
    def ips(self) -> float:
        return self.images / self.wall_s
