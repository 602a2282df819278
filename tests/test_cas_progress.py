"""cas says how long each step itself took, not the time since the pipeline started.

The steps run as one pipe: all start at once, and a step works from when the step before it
exited (its input ended) until it exits. Replaced steps that sleep make the intervals long
enough to see; the check is that the reported times are disjoint slices of the run (their
sum fits in the run's wall-clock time), which the old cumulative times were not.
"""

import re
import time

from caslib.config import PIPELINE_STEPS as STEPS
from conftest import run

SLOW = 'sh -c "cat; sleep 1"'  # works 1 s after its input ends, as a real step


def test_each_step_reports_its_own_time(tmp_path, config_file, casenv):
    core = tmp_path / "vmcore.raw"
    core.write_bytes(b"\0" * 4096 + b"not a dump, but unpack takes it" * 10)
    conf = config_file(f"[pipeline]\nident = {SLOW}\nfindkernel = {SLOW}\nextract = {SLOW}\n"
                       f"crash = {SLOW}\nmail = cat\n")
    started = time.monotonic()
    res = run("cas", "--config", conf, "-i", "timing", "-f", core, "--json", env=casenv)
    wall = time.monotonic() - started
    assert res.returncode == 0, res
    took = {m.group(1): float(m.group(2))
            for m in re.finditer(r"(\S+) done \(([\d.]+) s\)", res.stderr)}
    assert len(took) == len(STEPS), res.stderr  # every step of the pipeline said its time
    assert sum(took.values()) <= wall, (took, wall)
