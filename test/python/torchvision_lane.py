"""The torchvision lane: FiftyOne's data-loader paths, which FiftyOne takes when torch *and* torchvision
import (most FiftyOne users have both). The test venv's torch is the CPU wheel, and PyPI's torchvision
wheel is built against CUDA torch: its C++ ops (`_C.so`, detection ops such as nms) cannot load on the
CPU torch, and its Python side then fails at import, registering fake kernels for two ops that `_C.so`
would have defined. Defining those two schemas here lets the rest of torchvision import; nothing
FiftyOne's loaders or this model use calls them.

Activated by RADIO_TEST_TORCHVISION_LANE=<folder holding torchvision> (test_torchvision_lane.py runs the
FiftyOne tests again that way; .ci/setup-python.sh installs torchvision there with --target)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_keep: list[Any] = []  # a torch.library.Library unregisters its ops when collected


def activate(folder: str) -> None:
    import torch

    sys.path.insert(0, folder)
    try:
        torch.ops.load_library(str(Path(folder) / "torchvision" / "_C.so"))
    except OSError:  # a CUDA build on the CPU torch: define the schemas its Python side needs
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _keep.append(lib)
    import fiftyone.utils.torch  # noqa: F401 — fails here, loudly, if the lane still does not import
