"""FiftyOne's data-loader paths: the FiftyOne tests below again, in a pytest of their own where
torchvision imports (torchvision_lane.py), so that FiftyOne hands this model file paths through its
torch data loaders, as it does for most users (they have torch and torchvision), instead of the batch
loop with the swapped image reader that the rest of this suite runs. Found a bug the plain suite
could not: patch embeddings of boxes of different sizes (test_fiftyone_surface.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prerequisites import unavailable

HERE = Path(__file__).resolve().parent
LANE = HERE.parents[1] / ".venv" / "lanes" / "torchvision"
FILES = ("test_fiftyone_surface.py", "test_load_checks.py", "test_fiftyone_zoo.py")
NEEDS_LOADER = "FiftyOne's data loaders need torch and torchvision"


def test_the_fiftyone_tests_pass_through_fiftyone_data_loaders() -> None:
    if not (LANE / "torchvision").is_dir():
        unavailable(f"{LANE} has no torchvision: .ci/setup-python.sh installs it there (pip install --target)")
    # The same FiftyOne database and runtime folders as this session (the environment conftest.py set).
    proc = subprocess.run([sys.executable, "-m", "pytest", *FILES, "--rootdir", str(HERE), "-q", "-rs",
                           "-p", "no:cacheprovider"], cwd=HERE, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "RADIO_TEST_TORCHVISION_LANE": str(LANE)})
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert NEEDS_LOADER not in proc.stdout, f"the lane did not take FiftyOne's data loaders:\n{tail}"
    assert " passed" in proc.stdout.splitlines()[-1], tail
