"""client/pillow_fallback.py on its own (pure Python, no sidecar): Pillow's modes → the raw pixels
the sidecar takes, and the retry of UNSUPPORTED_FORMAT results (only those, once, in order, ids
kept, both reasons on failure)."""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from client.grpc_client import ImageResult  # noqa: E402
from client.pillow_fallback import decode, pixels, retry_unsupported  # noqa: E402

RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["BMP", "PPM", "TGA", "JPEG2000", "PNG", "TIFF"])
def test_lossless_rgb_formats_give_the_pixels(fmt: str) -> None:
    arr = decode(encode(Image.fromarray(RGB), fmt))
    assert arr.dtype == np.uint8 and arr.shape == (6, 5, 3)
    np.testing.assert_array_equal(arr, RGB)


def test_modes() -> None:
    grey = decode(encode(Image.fromarray(RGB[..., 0]), "PPM"))  # PGM
    assert grey.shape == (6, 5) and grey.dtype == np.uint8
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    got = decode(encode(pal, "BMP"))
    np.testing.assert_array_equal(got, np.asarray(pal.convert("RGB")))
    rgba = np.dstack([RGB, np.full((6, 5), 128, np.uint8)])
    np.testing.assert_array_equal(pixels(Image.fromarray(rgba)), rgba)
    assert pixels(Image.fromarray(rgba).convert("LA")).shape == (6, 5, 4)
    cmyk = pixels(Image.fromarray(RGB).convert("CMYK"))
    assert cmyk.shape == (6, 5, 3) and cmyk.dtype == np.uint8
    assert pixels(Image.new("1", (4, 3), 1)).tolist() == [[255] * 4] * 3


def test_sixteen_bit_and_float_scale_to_unit_range() -> None:
    ramp = (np.arange(30).reshape(6, 5) * 2000).astype(">u2")
    pgm16 = b"P5\n5 6\n65535\n" + ramp.tobytes()
    arr = decode(pgm16)
    assert arr.dtype == np.float32 and arr.shape == (6, 5)
    np.testing.assert_allclose(arr, ramp / 65535, atol=1e-6)
    i16 = Image.fromarray(ramp.astype("<u2"))
    assert i16.mode == "I;16"
    np.testing.assert_allclose(pixels(i16), ramp / 65535, atol=1e-6)
    f = Image.fromarray(np.array([[-2.0, 0.0], [2.0, np.nan]], np.float32))
    np.testing.assert_allclose(pixels(f), [[0, 0.5], [1, 0]])  # stretched; NaN → 0
    unit = Image.fromarray(np.array([[0.25, 0.75]], np.float32))
    np.testing.assert_allclose(pixels(unit), [[0.25, 0.75]])


def test_exif_orientation_and_first_frame() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    shown = decode(encode(Image.fromarray(RGB), "TIFF", exif=exif))
    np.testing.assert_array_equal(shown, np.rot90(RGB, -1))
    frames = [Image.fromarray(RGB), Image.fromarray(255 - RGB)]
    gif = decode(encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    np.testing.assert_array_equal(gif, RGB)


def _swapped_srgb_profile() -> bytes:
    """Pillow's sRGB profile with the red and blue primaries swapped: pixels stored as (b, g, r)
    under it are the sRGB colours (r, g, b)."""
    import struct

    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack_from(">I", icc, 128)
    entry = {struct.unpack_from(">4s", icc, 132 + 12 * i)[0]: 132 + 12 * i for i in range(count)}
    red = struct.unpack_from(">II", icc, entry[b"rXYZ"] + 4)
    blue = struct.unpack_from(">II", icc, entry[b"bXYZ"] + 4)
    struct.pack_into(">II", icc, entry[b"rXYZ"] + 4, *blue)
    struct.pack_into(">II", icc, entry[b"bXYZ"] + 4, *red)
    return bytes(icc)


def test_embedded_icc_profile_is_converted_to_srgb() -> None:
    # The sidecar converts a file's embedded profile to sRGB; pixels Pillow gives (fallback formats,
    # PIL images passed to predict) must be the same sRGB colours, not the values as stored.
    icc = _swapped_srgb_profile()
    stored = Image.fromarray(np.ascontiguousarray(RGB[..., ::-1]))
    for fmt in ("PNG", "TIFF"):
        np.testing.assert_allclose(decode(encode(stored, fmt, icc_profile=icc)), RGB, atol=1, err_msg=fmt)
    tagged = Image.open(io.BytesIO(encode(stored, "PNG", icc_profile=icc)))
    np.testing.assert_allclose(pixels(tagged), RGB, atol=1)
    alpha = np.full((6, 5), 77, np.uint8)
    rgba = Image.open(io.BytesIO(encode(Image.fromarray(np.dstack([RGB[..., ::-1], alpha])), "PNG", icc_profile=icc)))
    got = pixels(rgba)
    assert got.shape == (6, 5, 4)
    np.testing.assert_allclose(got[..., :3], RGB, atol=1)
    np.testing.assert_array_equal(got[..., 3], alpha)


def test_failures_say_why() -> None:
    with pytest.raises(Exception, match="does not recognise it") as info:
        decode(b"meeting notes, not an image\n")
    assert info.value.code == "UNSUPPORTED_FORMAT"
    bmp = encode(Image.fromarray(RGB), "BMP")
    with pytest.raises(Exception, match="could not decode it as BMP: image file is truncated") as info:
        decode(bmp[: len(bmp) * 2 // 3])
    assert info.value.code == "CORRUPT_IMAGE"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(Exception, match="does not recognise"):  # Ghostscript is never run
        decode(eps)


def test_retry_only_unsupported_once_in_order(tmp_path: Path) -> None:
    bmp = tmp_path / "a.bmp"
    Image.fromarray(RGB).save(bmp)
    fake = tmp_path / "b.bmp"
    fake.write_text("not an image")
    inputs = [{"id": "ok", "path": "/x.png"}, {"id": str(bmp), "path": str(bmp)},
              {"id": "corrupt", "path": "/c.jpg"}, {"id": str(fake), "path": str(fake)},
              {"id": "remote.bmp", "encoded": bmp.read_bytes()}]
    unsupported = "not a supported image (BMP (not supported by this sharp build)) [UNSUPPORTED_FORMAT]"
    results = [ImageResult(0, "ok", array=np.zeros(2, np.float32)),
               ImageResult(1, str(bmp), error_code="UNSUPPORTED_FORMAT", error=f'input "{bmp}": {unsupported}'),
               ImageResult(2, "corrupt", error_code="CORRUPT_IMAGE", error="could not be decoded"),
               ImageResult(3, str(fake), error_code="UNSUPPORTED_FORMAT", error=f'input "{fake}": unrecognised data'),
               ImageResult(4, "remote.bmp", error_code="UNSUPPORTED_FORMAT", error=unsupported)]
    calls: list[list[dict[str, Any]]] = []

    def embed(raw: list[dict[str, Any]]) -> list[ImageResult]:
        calls.append(raw)
        return [ImageResult(k, r["id"], array=np.full(2, r["raw"].mean(), np.float32)) for k, r in enumerate(raw)]

    out = retry_unsupported(inputs, results, embed)
    assert len(calls) == 1 and [r["id"] for r in calls[0]] == [str(bmp), "remote.bmp"]
    np.testing.assert_array_equal(calls[0][0]["raw"], RGB)
    assert [r.index for r in out] == [0, 1, 2, 3, 4] and [r.id for r in out] == [i["id"] for i in inputs]
    assert [r.ok for r in out] == [True, True, False, False, True]
    assert out[2] is results[2]  # a corrupt image is not retried
    assert out[3].error_code == "UNSUPPORTED_FORMAT"
    assert str(fake) in out[3].error and "unrecognised data" in out[3].error and "Pillow" in out[3].error
    # Nothing to do: no call at all.
    assert retry_unsupported(inputs[:1], results[:1], embed) == results[:1] and len(calls) == 1


def test_calls_are_bounded_by_images_and_bytes() -> None:
    """Decoded pixels are big: RadioClient.embed splits a list into calls of at most
    max_images_per_call inputs and max_bytes_per_call bytes (one bigger input goes alone)."""
    from client.grpc_client import _chunks

    assert _chunks([{"path": "/a"}] * 5, 2, 1 << 20) == [(0, 2), (2, 4), (4, 5)]
    big = [{"encoded": b"x" * 60}, {"encoded": b"x" * 30}, {"raw": np.zeros(200, np.uint8)}, {"path": "/a"}]
    assert _chunks(big, 64, 100) == [(0, 2), (2, 3), (3, 4)]
    assert _chunks([], 64, 100) == []
