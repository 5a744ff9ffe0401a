"""What some tests need from the machine beyond Python and Node (scripts/setup-test-packages.sh
installs it): without it they skip with the reason, except in CI (CI set), where they fail."""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: SwiftShader, the CPU Vulkan driver of Debian's chromium: WebGPU on a machine without a GPU.
SWIFTSHADER_ICD = os.environ.get("RADIO_TEST_SWIFTSHADER_ICD", "/usr/lib/chromium/vk_swiftshader_icd.json")


def unavailable(message: str) -> NoReturn:
    """Skip the test, saying what is missing; in CI, fail it."""
    if os.environ.get("CI"):
        pytest.fail(f"CI: {message}")
    pytest.skip(message)
