"""What a harness run measures: the modes (full, quick, tiny) and the cells they expand to.

A cell is one measurement: a system, a job kind and a load shape, in one repetition. The full
run follows BENCH.md: 50 batches of 200 jobs, 5 repetitions, each repetition's cells in a
shuffled order, fresh state (a new database, a flushed Redis) for every cell. `--quick` and
`--tiny` trade that for time: fewer batches and shapes, one repetition, and one start of each
system whose cells then run one after another on it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

KIND_ORDER = ("noop", "io10", "http")
ALL_SYSTEMS = (
    "BG-S", "BG-S0", "BG-SC", "BG-SC10", "BG-P1", "BG-P2", "CEL-D", "CEL-T", "CEL-TF", "ARQ-D", "ARQ-T",
    "ARQ-TF", "SAQ-D", "SAQ-T", "PRO-D", "PRO-T",
)  # fmt: skip


@dataclass(frozen=True)
class Shape:
    name: str  # burst | paced | solo | run
    rate: float | None = None  # batches/s, paced only

    @property
    def label(self) -> str:
        return f"paced {self.rate:g}/s" if self.name == "paced" else self.name

    @staticmethod
    def parse(text: str) -> Shape:
        name, _, rate = text.partition("@")
        if name not in ("burst", "paced", "solo", "run") or (name == "paced") != bool(rate):
            raise ValueError(f"a shape is burst, solo, run or paced@RATE, not {text!r}")
        return Shape(name, float(rate) if rate else None)


@dataclass(frozen=True)
class Cell:
    rep: int
    system: str
    kind: str
    shape: Shape

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.system, self.kind, self.shape.label)


@dataclass
class Plan:
    mode: str = "full"
    systems: list[str] = field(default_factory=lambda: list(ALL_SYSTEMS))
    kinds: list[str] = field(default_factory=lambda: list(KIND_ORDER))
    # kind -> shapes; "run" (run calls/s) is measured on the batchgate systems only
    shapes: dict[str, list[str]] = field(
        default_factory=lambda: {
            "noop": ["burst", "paced@1", "paced@2", "paced@5", "solo", "run"],
            # io10 solo: BG-S (and BG-P) run a batch's jobs in order, 200 x 10 ms by design; BG-SC
            # asks for "concurrency": 50 and shows the concurrent case beside it
            "io10": ["burst", "solo"],
            "http": ["burst", "solo"],
        }
    )
    # To keep the full run's length reasonable, some systems run fewer cells (None: every cell):
    # the alternatives at their defaults (-D) the noop burst and solo (arq's defaults alone would
    # take 8 minutes per io10 burst), the -TF ones (Redis with appendfsync always) where
    # durability shows: noop burst and solo; BG-SC (batchgate with "concurrency": 50) where
    # concurrency shows: io10 and http, and the noop burst (not the paced cells, nor `run`).
    defaults_shapes: list[str] | None = field(default_factory=lambda: ["noop burst", "noop solo"])
    durable_shapes: list[str] | None = field(default_factory=lambda: ["noop burst", "noop solo"])
    concurrent_shapes: list[str] | None = field(
        default_factory=lambda: ["noop burst", "io10 burst", "io10 solo", "http burst", "http solo"]
    )
    # BG-SC10 (concurrency 10 at the default 50 batches in flight) beside BG-S's sequential io10
    # burst, and its solo cell: what a client waiting for one batch gains
    concurrent10_shapes: list[str] | None = field(default_factory=lambda: ["io10 burst", "io10 solo"])
    # BG-S0 (BG-S with metrics and info logs off) where observability could cost: the noop burst
    # and `run`, compared with BG-S's
    unobserved_shapes: list[str] | None = field(default_factory=lambda: ["noop burst", "noop run"])
    batches: int = 50
    jobs_per_batch: int = 200
    solo_batches: int = 30
    run_calls: int = 2000
    reps: int = 5
    fresh_per_cell: bool = True  # False: one start per system and repetition
    shuffle: bool = True
    seed: int = 0
    limits: bool = True
    limit_seconds: float = 3.0
    stub_calls: int = 10000
    stall_s: float = 60.0  # no callback for this long while some are missing: the run is void
    linger_s: float = 1.0  # after the last callback, how long duplicates may still arrive
    inject_fault: str | None = None  # drop | duplicate: prove the gate voids such a run

    @classmethod
    def preset(cls, mode: str) -> Plan:
        if mode == "quick":
            return cls(
                mode="quick",
                systems=[s for s in ALL_SYSTEMS if not s.endswith("F")],
                shapes={
                    "noop": ["burst", "solo", "paced@5", "run"],
                    "io10": ["burst", "solo"],
                    "http": ["burst"],
                },
                batches=10,
                solo_batches=5,
                run_calls=500,
                reps=1,
                fresh_per_cell=False,
                shuffle=False,
                limit_seconds=1.0,
                stub_calls=2000,
                linger_s=0.3,
            )
        if mode == "tiny":
            return cls(
                mode="tiny",
                systems=["BG-S"],
                kinds=["noop"],
                shapes={"noop": ["burst", "solo"]},
                batches=3,
                jobs_per_batch=20,
                solo_batches=2,
                run_calls=50,
                reps=1,
                fresh_per_cell=False,
                shuffle=False,
                limits=False,
                linger_s=0.2,
            )
        return cls()

    def cells(self, systems: list[str]) -> list[Cell]:
        """Every cell, repetition by repetition; shuffled within each one when `shuffle`."""
        rng = random.Random(self.seed)
        found: list[Cell] = []
        for rep in range(1, self.reps + 1):
            cells = [
                Cell(rep, system, kind, Shape.parse(shape))
                for system in systems
                for kind in self.kinds
                for shape in self.shapes.get(kind, [])
                if self._applies(system, kind, shape)
            ]
            if self.shuffle:
                rng.shuffle(cells)
            if not self.fresh_per_cell:
                # each system's cells together; `run` last, since its jobs outlive its measurement
                cells.sort(key=lambda c: (systems.index(c.system), c.shape.name == "run"))
            found.extend(cells)
        return found

    def _applies(self, system: str, kind: str, shape: str) -> bool:
        only = self.durable_shapes if system.endswith("F") else None
        only = self.defaults_shapes if system.endswith("-D") else only
        only = self.concurrent_shapes if system == "BG-SC" else only
        only = self.concurrent10_shapes if system == "BG-SC10" else only
        only = self.unobserved_shapes if system == "BG-S0" else only
        if only is not None and f"{kind} {shape}" not in only:
            return False
        return shape != "run" or system.startswith("BG")

    def callback_timeout_s(self, jobs: int) -> float:
        """Generous: the slowest system at its defaults (arq: ~20 io10 jobs/s) must finish, or
        the gate voids the run."""
        return 120.0 + 0.1 * jobs

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
