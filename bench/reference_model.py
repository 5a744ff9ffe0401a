"""Path (a): a FiftyOne model written the way the existing Python C-RADIO integrations are written.

Per image: FiftyOne decodes it (numpy HWC), the model converts it to PIL, resizes the shorter side
and centre-crops like a CLIP image processor, scales to [0, 1] with numpy, and runs the torch
model eagerly on that one image (fp32; bf16 autocast on a GPU). Heatmaps: PCA of the patch features
in numpy, smoothed and resized, as ``fo.Heatmap``. The torch model is the repo's independent
reference forward (test/python/radio_reference.py) on the same random checkpoint.

``ReferenceCore`` is the model without FiftyOne (the GPU script runs it in a plain loop where
FiftyOne isn't installed); ``fiftyone_model`` wraps it as a ``fom.Model``.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from common import HEATMAP_DEFAULTS, clip_preprocess, pca1_heatmap


class ReferenceCore:
    def __init__(self, ref: Any, resolution: int, device: str = "cpu",
                 heatmap_max_side: int = HEATMAP_DEFAULTS["max_side"], sigma: float = HEATMAP_DEFAULTS["smoothing_sigma"]) -> None:
        self.ref = ref
        self.resolution = resolution
        self.device = torch.device(device)
        self.heatmap_max_side = heatmap_max_side
        self.sigma = sigma
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"prep_s": 0.0, "forward_s": 0.0, "post_s": 0.0, "images": 0}
        self.ends: list[float] = []

    def _autocast(self) -> Any:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, img: Any, spatial: bool) -> tuple[np.ndarray, np.ndarray | None]:
        t0 = time.perf_counter()
        x = torch.from_numpy(clip_preprocess(img, self.resolution))[None].to(self.device)
        t1 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            summary, features = self.ref.forward(x, dtype=torch.float32)
        out = summary.float().cpu().numpy()[0]  # waits for the GPU
        feats = features.float().cpu().numpy()[0] if spatial else None
        t2 = time.perf_counter()
        self.stats["prep_s"] += t1 - t0
        self.stats["forward_s"] += t2 - t1
        self.stats["images"] += 1
        return out, feats

    def embed(self, img: Any) -> np.ndarray:
        summary, _ = self.forward(img, spatial=False)
        self.ends.append(time.perf_counter())
        return summary

    def heatmap(self, img: Any) -> np.ndarray:
        _, features = self.forward(img, spatial=True)
        assert features is not None
        t0 = time.perf_counter()
        g = self.resolution // self.ref.patch_size
        hm = pca1_heatmap(features, (g, g), self.heatmap_max_side, self.sigma)
        self.stats["post_s"] += time.perf_counter() - t0
        self.ends.append(time.perf_counter())
        return hm


def fiftyone_model(core: ReferenceCore, output: str = "summary") -> Any:
    import fiftyone.core.labels as fol
    import fiftyone.core.models as fom

    class ReferenceRadioModel(fom.Model, fom.EmbeddingsMixin):
        def __init__(self) -> None:
            self.core = core
            self._preprocess = True

        @property
        def media_type(self) -> str:
            return "image"

        @property
        def has_logits(self) -> bool:
            return False

        @property
        def has_embeddings(self) -> bool:
            return True

        @property
        def ragged_batches(self) -> bool:
            return True  # one image at a time

        @property
        def transforms(self) -> None:
            return None

        @property
        def preprocess(self) -> bool:
            return self._preprocess

        @preprocess.setter
        def preprocess(self, value: bool) -> None:
            self._preprocess = value

        def embed(self, arg: Any) -> np.ndarray:
            return self.core.embed(arg)

        def embed_all(self, args: Sequence[Any]) -> list[np.ndarray]:
            return [self.core.embed(a) for a in args]

        def predict(self, arg: Any) -> Any:
            if output != "spatial":
                raise ValueError("load with output='spatial' for heatmaps")
            return fol.Heatmap(map=self.core.heatmap(arg), range=[0, 255])

        def predict_all(self, args: Sequence[Any]) -> list[Any]:
            return [self.predict(a) for a in args]

    return ReferenceRadioModel()
