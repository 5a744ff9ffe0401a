"""Pillow for the formats sharp can't decode (BMP, PPM/PGM, TGA, ICO, JPEG 2000, ...).

The sidecar decodes first: it is faster, and it may be remote. Only images it refused with
``UNSUPPORTED_FORMAT`` come here (a corrupt JPEG stays an error; a path outside the sidecar's
allowed roots fails with another code, so this never reads a file the sidecar would not). They are
decoded with Pillow (already a FiftyOne dependency) from the same path or bytes, and the pixels go
back to the sidecar in one follow-up call, under the same ids and at the same places in the batch.
An image Pillow can't decode either keeps a per-image error that gives both reasons.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .grpc_client import ImageResult
from .options import SHARED_DEFAULTS

logger = logging.getLogger(__name__)

#: Pillow plugins never used here: EPS runs Ghostscript on the file, WMF is a vector format (and
#: Windows-only), MPEG only reads a header.
REFUSED_PLUGINS = frozenset({"EPS", "WMF", "MPEG"})

#: The sidecar's default pixel limit (--max-image-pixels): checked from the header, before decoding.
MAX_PIXELS: int = SHARED_DEFAULTS["image"]["max_pixels"]

#: Decoded pixels above this are not sent: three quarters of the sidecar's default message limit
#: (--max-message-mb), which the rest of the call's message must fit beside.
MAX_RAW_BYTES: int = SHARED_DEFAULTS["message"]["max_mb"] * 1024 * 1024 * 3 // 4


class PillowError(Exception):
    """Why Pillow could not give pixels; ``code`` is the error code the image then gets."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _formats() -> list[str]:
    from PIL import Image

    Image.init()
    return [f for f in Image.OPEN if f not in REFUSED_PLUGINS]


def _to_unit(arr: np.ndarray, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float single-channel image → float32 in [0, 1]."""
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        return (a / 65535.0).astype(np.float32)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.float32)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if mode == "I" and lo >= 0 and hi <= 65535:
        out = a / 65535.0  # 16-bit data (16-bit PGM, PNG, TIFF open as "I")
    elif mode == "F" and lo >= 0 and hi <= 1:
        out = a  # already unit-range
    else:
        out = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)  # arbitrary range: stretched
    return np.where(finite, out, 0.0).astype(np.float32)


def pixels(image: Any) -> np.ndarray:
    """A PIL image (first frame, EXIF orientation applied, an embedded RGB/CMYK profile converted to sRGB) → HxW (grey), HxWx3 or HxWx4 pixels:
    uint8, or float32 in [0, 1] for 16-bit, 32-bit integer and float images."""
    from PIL import ImageOps

    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "RGBA", "CMYK"):  # to sRGB, as the sidecar converts a file's profile
        from PIL import ImageCms

        try:
            image = ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                              renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                              outputMode="RGBA" if image.mode == "RGBA" else "RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: the pixels as stored (sharp, too, only warns)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_unit(np.asarray(image), mode)
    if mode == "L":
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("RGB", "RGBA"):
        return np.asarray(image)
    if mode == "P":
        alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        return np.asarray(image.convert("RGBA" if alpha else "RGB"))
    if mode in ("LA", "La", "PA", "RGBa"):
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def decode(source: str | bytes) -> np.ndarray:
    """Decodes a file path or encoded bytes with Pillow; raises PillowError with the reason."""
    from PIL import Image, UnidentifiedImageError

    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        image = Image.open(fp, formats=_formats())
    except UnidentifiedImageError:
        raise PillowError("UNSUPPORTED_FORMAT", "Pillow does not recognise it either") from None
    except Image.DecompressionBombError as err:
        raise PillowError("TOO_LARGE", f"Pillow refused it: {err}") from None
    except Exception as err:  # noqa: BLE001 - a broken header: any exception a plugin raises
        raise PillowError("CORRUPT_IMAGE", f"Pillow could not read its header: {_reason(err)}") from None
    with image:
        w, h = image.size
        if w * h > MAX_PIXELS:
            raise PillowError("TOO_LARGE", f"{image.format} image is {h}x{w} = {w * h} pixels, above the "
                                           f"{MAX_PIXELS}-pixel limit")
        try:
            image.load()
            arr = pixels(image)
        except Exception as err:  # noqa: BLE001
            raise PillowError("CORRUPT_IMAGE", f"Pillow could not decode it as {image.format}: {_reason(err)}") from None
    if arr.nbytes > MAX_RAW_BYTES:
        raise PillowError("TOO_LARGE", f"decoded {image.format} pixels are {arr.nbytes} bytes, above the "
                                       f"{MAX_RAW_BYTES}-byte limit for one image")
    return np.ascontiguousarray(arr)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _source(item: dict[str, Any]) -> str | bytes | None:
    if "encoded" in item:
        return bytes(item["encoded"])
    if "path" in item:
        return str(item["path"])
    return None


def retry_unsupported(inputs: Sequence[dict[str, Any]], results: list[ImageResult],
                      embed: Callable[[list[dict[str, Any]]], list[ImageResult]]) -> list[ImageResult]:
    """Results with those the sidecar refused as UNSUPPORTED_FORMAT decoded by Pillow and sent again
    as raw pixels through ``embed`` (one call for all of them). Same length and order as ``results``;
    only those images are sent again; one Pillow can't decode keeps an error with both reasons."""
    todo = [i for i, r in enumerate(results)
            if not r.ok and r.error_code == "UNSUPPORTED_FORMAT" and _source(inputs[i]) is not None]
    if not todo:
        return results
    out = list(results)
    resend: list[int] = []
    raw: list[dict[str, Any]] = []
    for i in todo:
        first = results[i]
        try:
            arr = decode(_source(inputs[i]))  # type: ignore[arg-type]
        except PillowError as err:
            out[i] = ImageResult(index=first.index, id=first.id, error_code=err.code,
                                 error=f"{first.error}; then {err.reason}")
            continue
        resend.append(i)
        raw.append({"id": first.id, "raw": arr})
    if raw:
        logger.debug("C-RADIOv4: %d images decoded with Pillow (the sidecar can't read their format)", len(raw))
        again = embed(raw)
        if len(again) != len(raw):
            raise RuntimeError(f"sidecar answered {len(again)} results for {len(raw)} images")
        for i, r in zip(resend, again):
            r.index = results[i].index
            out[i] = r
    return out
