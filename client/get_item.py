"""The data-loader item for RadioModel when torch is installed: the sample's file path, no pixels."""
from __future__ import annotations

from typing import Any

import fiftyone.utils.torch as fout


class FilepathGetItem(fout.GetItem):
    @property
    def required_keys(self) -> list[str]:
        return ["filepath"]

    def __call__(self, d: dict[str, Any]) -> str:
        return d["filepath"]
