"""CPU quotas for single processes, as a small host or a container's CPU limit gives them.

Each limited process runs in a cgroup of its own, under one parent per harness run
(`batchgate-bench-<pid>`), with a quota of a share of one core: `cpu.cfs_quota_us` over
`cpu.cfs_period_us` on cgroup v1's `cpu` controller, or `cpu.max` on cgroup v2. A process enters
its cgroup before it execs (`CpuGroup.wrap`), so nothing it runs escapes the limit.

`detect()` tries v1, then v2, and keeps the first whose quota really throttles a busy loop: a
hierarchy can be mounted and writable without a `cpu` controller (here cgroup2 is mounted at
/sys/fs/cgroup/unified, but v1 holds the controller). `close()` removes every group of the run;
it is also registered with atexit, and `detect()` sweeps empty groups left by a run that was killed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "batchgate-bench-"
PROBE_QUOTA_PCT = 10.0
PROBE_SPIN_S = 0.4
# enters the cgroup named by $0, then becomes the command: `sh -c SCRIPT PROCS_FILE ARGV...`
ENTER = 'echo $$ > "$0" && exec "$@"'
SPIN = f"import time\nend = time.monotonic() + {PROBE_SPIN_S}\nwhile time.monotonic() < end:\n    pass\n"


class CgroupError(RuntimeError):
    """A cgroup could not be made or set up here."""


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1: the v1 `cpu` controller's mount; 2: a cgroup2 mount
    root: Path

    def describe(self) -> str:
        files = "cpu.cfs_quota_us / cpu.cfs_period_us" if self.version == 1 else "cpu.max"
        return f"cgroup v{self.version} at {self.root} ({files})"


def hierarchies(mounts: str | None = None) -> list[Hierarchy]:
    """The mounted hierarchies that could hold the `cpu` controller, v1 first."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return []
    v1, v2 = [], []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        where, kind, options = Path(fields[1]), fields[2], fields[3].split(",")
        if kind == "cgroup" and "cpu" in options:
            v1.append(Hierarchy(1, where))
        elif kind == "cgroup2":
            v2.append(Hierarchy(2, where))
    return v1 + v2


class CpuGroup:
    """One process's cgroup, with its quota (None: in a cgroup of its own, but not limited)."""

    def __init__(self, hierarchy: Hierarchy, path: Path, quota_pct: float | None, period_us: int) -> None:
        self.hierarchy = hierarchy
        self.path = path
        self.quota_pct = quota_pct
        self.period_us = period_us

    def apply(self, *, limit: bool = True) -> None:
        """Sets the quota (no limit yet with `limit=False`: a process can then start at full speed)."""
        quota = (
            None
            if not (limit and self.quota_pct)
            else max(1000, round(self.period_us * self.quota_pct / 100))
        )
        if self.hierarchy.version == 1:
            (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(-1 if quota is None else quota))
        else:
            (self.path / "cpu.max").write_text(f"{'max' if quota is None else quota} {self.period_us}")

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv`, run so that it enters this cgroup before it starts (its pid stays the same)."""
        return ["/bin/sh", "-c", ENTER, str(self.path / "cgroup.procs"), *argv]

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def throttling(self) -> dict[str, float]:
        """Periods the group was runnable in, how many of them it hit its quota, and for how long."""
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        except (OSError, ValueError):
            return {}
        throttled_s = (
            int(stat.get("throttled_time", 0)) / 1e9
            if self.hierarchy.version == 1
            else int(stat.get("throttled_usec", 0)) / 1e6
        )
        return {
            "periods": int(stat.get("nr_periods", 0)),
            "throttled": int(stat.get("nr_throttled", 0)),
            "throttled_s": throttled_s,
        }

    def remove(self) -> None:
        """Removes the group; a process still in it (it should have exited) goes to the root first."""
        for _ in range(50):
            if not self.path.exists():
                return
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    (self.hierarchy.root / "cgroup.procs").write_text(str(pid))
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)  # a process of the group is still exiting


class CpuCgroups:
    """The cgroups of one harness run, under one parent."""

    def __init__(self, hierarchy: Hierarchy, *, period_us: int = 100_000) -> None:
        self.hierarchy = hierarchy
        self.period_us = period_us
        self.parent = hierarchy.root / f"{PREFIX}{os.getpid()}"
        self.groups: dict[str, CpuGroup] = {}
        try:
            self.parent.mkdir(exist_ok=True)
            if hierarchy.version == 2:
                _enable_cpu(hierarchy.root)
                _enable_cpu(self.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.parent.rmdir()
            raise CgroupError(str(exc)) from exc
        atexit.register(self.close)

    @classmethod
    def detect(cls, *, period_us: int = 100_000) -> tuple[CpuCgroups | None, list[str]]:
        """The first hierarchy whose CPU quota throttles a busy loop here, and what each one tried
        said (for the report)."""
        tried: list[str] = []
        chosen: CpuCgroups | None = None
        for hierarchy in hierarchies():  # every one is tried, so that the report says why not the others
            sweep_stale(hierarchy)
            try:
                cgroups = cls(hierarchy, period_us=period_us)
            except CgroupError as exc:
                tried.append(f"{hierarchy.describe()}: cannot be used: {exc}")
                continue
            verdict = cgroups.probe()
            tried.append(f"{hierarchy.describe()}: {verdict or 'its quota throttles a busy loop'}")
            if verdict is None and chosen is None:
                chosen = cgroups
            else:
                cgroups.close()
        return chosen, tried or ["no cgroup hierarchy is mounted"]

    def probe(self) -> str | None:
        """None when a busy loop at PROBE_QUOTA_PCT % is throttled; else why not."""
        try:
            group = self.create("probe", PROBE_QUOTA_PCT)
        except (OSError, CgroupError) as exc:
            return f"no quota can be set: {exc}"
        try:
            done = subprocess.run(
                group.wrap([sys.executable, "-c", SPIN]), capture_output=True, text=True, timeout=30
            )
            if done.returncode != 0:
                return f"a process cannot enter it: {(done.stderr or done.stdout).strip()[-300:]}"
            stats = group.throttling()
        finally:
            self.remove("probe")
        if not stats.get("throttled"):
            return f"a busy loop at {PROBE_QUOTA_PCT:g} % of a core was not throttled ({stats})"
        return None

    def create(self, name: str, quota_pct: float | None, *, limit: bool = True) -> CpuGroup:
        """A new group: `quota_pct` of one core, or no limit for None or 0; with `limit=False`, the quota
        applies only once `apply()` is called."""
        path = self.parent / name
        try:
            path.mkdir()
            group = CpuGroup(self.hierarchy, path, quota_pct or None, self.period_us)
            group.apply(limit=limit)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise CgroupError(f"cannot make cgroup {path}: {exc}") from exc
        self.groups[name] = group
        return group

    def remove(self, name: str) -> None:
        group = self.groups.pop(name, None)
        if group is not None:
            group.remove()

    def close(self) -> None:
        """Removes every group of the run, and the parent (idempotent)."""
        for name in list(self.groups):
            self.remove(name)
        for leftover in self.parent.glob("*/") if self.parent.exists() else []:
            CpuGroup(self.hierarchy, leftover, None, self.period_us).remove()
        with contextlib.suppress(OSError):
            self.parent.rmdir()

    def describe(self) -> dict[str, Any]:
        return {
            "hierarchy": self.hierarchy.describe(),
            "version": self.hierarchy.version,
            "parent": str(self.parent),
            "period_us": self.period_us,
        }


def _enable_cpu(path: Path) -> None:
    """cgroup v2: lets the children of `path` have CPU limits."""
    controllers = (path / "cgroup.controllers").read_text().split()
    if "cpu" not in controllers:
        raise OSError(
            f"no cpu controller in {path / 'cgroup.controllers'} ({' '.join(controllers) or 'none'})"
        )
    if "cpu" not in (path / "cgroup.subtree_control").read_text().split():
        (path / "cgroup.subtree_control").write_text("+cpu")


def sweep_stale(hierarchy: Hierarchy) -> None:
    """Removes the empty groups of earlier runs whose harness process is gone."""
    for parent in hierarchy.root.glob(f"{PREFIX}*"):
        owner = parent.name.removeprefix(PREFIX)
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        for child in [*parent.glob("*/"), parent]:
            with contextlib.suppress(OSError):
                if not (child / "cgroup.procs").read_text().split():
                    child.rmdir()
