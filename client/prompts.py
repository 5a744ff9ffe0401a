"""Prompts for zero-shot classification: how class names become text, and how text scores become
labels. The templates are the 80 OpenAI wrote for CLIP's ImageNet zero-shot evaluation (published
with CLIP under the MIT licence, reused by open_clip and by RADIO's zero-shot example)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

TEMPLATE_SETS = {"openai": OPENAI_IMAGENET_TEMPLATES}


def class_prompts(classes: Sequence[str], text_prompt: str | None, templates: Sequence[str] | None) -> list[list[str]]:
    """Per class, the prompts whose mean embedding stands for it: one "<text_prompt> <class>" (FiftyOne's
    CLIP convention), or one per template ("{}" replaced by the class name)."""
    if templates:
        return [[t.replace("{}", c) for t in templates] for c in classes]
    return [[f"{text_prompt} {c}" if text_prompt else c] for c in classes]


def class_embeddings(per_class: Sequence[np.ndarray]) -> np.ndarray:
    """[n_classes, D]: each class's normalised prompt embeddings averaged, then re-normalised (as
    CLIP's and RADIO's zero-shot examples do; one prompt per class is that prompt's embedding)."""
    rows = []
    for e in per_class:
        m = np.asarray(e, dtype=np.float64).mean(axis=0)
        rows.append(m / max(np.linalg.norm(m), 1e-12))
    return np.stack(rows).astype(np.float32)


def zero_shot_scores(images: np.ndarray, classes: np.ndarray, logit_scale: float, logit_bias: float,
                     scores: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) [n_images, n_classes] from raw image embeddings and normalised class
    embeddings. "softmax": softmax over the classes of exp(logit_scale)·cosine (CLIP's convention,
    probabilities sum to 1); "sigmoid": SigLIP's own sigmoid(exp(logit_scale)·cosine + logit_bias),
    an independent yes/no per class."""
    x = np.asarray(images, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cos = x @ np.asarray(classes, dtype=np.float64).T
    logits = np.exp(logit_scale) * cos
    if scores == "sigmoid":
        logits = logits + logit_bias
        probs = 1.0 / (1.0 + np.exp(-logits))
    else:
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs = e / e.sum(axis=1, keepdims=True)
    return logits.astype(np.float32), probs.astype(np.float32)
