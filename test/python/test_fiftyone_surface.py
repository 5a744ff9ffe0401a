"""The parts of FiftyOne's model API that a user reaches with arguments the other tests leave at their
defaults (apply_model's confidence_thresh and classes), FiftyOne Brain given the model itself (it
computes the embeddings), video datasets (the model runs on their frames),
and compute_patch_embeddings through FiftyOne's data loader (torch + torchvision installed). The model is this repository's zoo code (imported as
test_reliability.py does) on tiny compiled graphs, run by the real FiftyOne loops."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from test_reliability import MODEL, radio  # noqa: F401 — registers the radio_zoo_under_test package: first

# isort: split
from prerequisites import SWIFTSHADER_ICD, unavailable
from radio_zoo_under_test import zoo  # noqa: E402
from radio_zoo_under_test.client.options import parse_options  # noqa: E402
from radio_zoo_under_test.zoo import make_local_model  # noqa: E402
from sidecar_cli import compile_graph, sidecar


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("surface")
    sidecar("make-checkpoint", "--preset", "tiny-text", "--siglip", str(root / "siglip"), "--out", str(root / "ckpt"))
    return {"fp32": compile_graph(root / "ckpt", root / "fp32"),
            "fp32-text": compile_graph(root / "ckpt", root / "fp32-text", "--adaptors", "siglip2-g", "--text",
                                       "--siglip", str(root / "siglip"))}


def local(graphs: dict[str, Path], name: str = "fp32", **options: Any) -> Any:
    return make_local_model(MODEL, parse_options(MODEL, options), {name: graphs[name]}, name, "cpu")


@pytest.fixture
def images(tmp_path: Path):
    rng = np.random.default_rng(7)
    ds = fo.Dataset()
    for i in range(6):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(path)
        ds.add_sample(fo.Sample(filepath=str(path)))
    yield ds
    ds.delete()


def test_zero_shot_confidence_thresh_and_classes_filter_the_labels(graphs: dict[str, Path], images: fo.Dataset) -> None:
    """apply_model(confidence_thresh=..., classes=...) reads model.config, which FiftyOne's models all
    have: this one had none, so both raised AttributeError before any image was labelled (the App's
    apply_zoo_model form sends confidence_thresh too)."""
    classes = ["dog", "cat", "red car"]
    model = local(graphs, "fp32-text", classes=classes, embedding_space="text")
    try:
        images.apply_model(model, "all", batch_size=4)
        labels = images.values("all")
        assert all(isinstance(label, fo.Classification) for label in labels)
        confidences = sorted(label.confidence for label in labels)
        thresh = (confidences[2] + confidences[3]) / 2  # half of them above
        images.apply_model(model, "kept", batch_size=4, confidence_thresh=thresh, skip_failures=False)
        assert [k.label if k else None for k in images.values("kept")] == \
               [a.label if a.confidence >= thresh else None for a in labels]
        top = labels[0].label
        images.apply_model(model, "one_class", classes=[top], skip_failures=False)
        assert [k.label if k else None for k in images.values("one_class")] == \
               [a.label if a.label == top else None for a in labels]
    finally:
        model.close()
    spatial = local(graphs, output_type="spatial")
    try:  # labels without a confidence (heatmaps) are kept
        images.apply_model(spatial, "hm", batch_size=3, confidence_thresh=0.5, skip_failures=False)
        assert all(isinstance(h, fo.Heatmap) for h in images.values("hm"))
    finally:
        spatial.close()


def test_apply_model_with_a_summary_model_fails_once_before_any_batch(graphs: dict[str, Path], images: fo.Dataset,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A summary model (the default) has nothing to predict. Under apply_model's default
    skip_failures=True it used to fail each batch: a warning per batch, then a field of Nones. It now
    raises once, before the loop, saying what to load instead; compute_embeddings still works."""
    model = local(graphs)
    try:
        with pytest.raises(ValueError, match=r"a summary model has no labels to apply: use dataset.compute_embeddings"):
            images.apply_model(model, "labels", batch_size=2)
        assert "labels" not in images.get_field_schema()
        assert not [r for r in caplog.records if r.levelname == "WARNING" and "summary model" in r.getMessage()]
        images.compute_embeddings(model, embeddings_field="e", batch_size=4)
        assert all(e is not None and e.ndim == 1 for e in images.values("e"))
        with pytest.raises(ValueError, match=r"a summary model has no labels"):  # called directly, too
            model.predict(images.first().filepath)
    finally:
        model.close()


def test_brain_methods_given_the_model_compute_their_own_embeddings(graphs: dict[str, Path], tmp_path: Path) -> None:
    """fob.compute_*(samples, model=...) embed through this model (FiftyOne's compute_embeddings inside
    each, through the data loader in the torchvision lane): uniqueness (also of regions), near
    duplicates, representativeness (it needs 20 samples or more), visualization and similarity, of
    images and of patches. An exact duplicate must come out as one."""
    import fiftyone.brain as fob

    rng = np.random.default_rng(11)
    ds = fo.Dataset()
    box = fo.Detections(detections=[fo.Detection(label="a", bounding_box=[0.1, 0.2, 0.5, 0.4])])
    for i in range(24):
        path = tmp_path / f"b{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
        ds.add_sample(fo.Sample(filepath=str(path), gt=box.copy()))
    ds.add_sample(fo.Sample(filepath=ds.first().filepath, gt=box.copy()))  # the same file again
    model = local(graphs, image_size=64)
    try:
        fob.compute_uniqueness(ds, model=model, batch_size=8)
        fob.compute_uniqueness(ds, uniqueness_field="roi_uniqueness", roi_field="gt", model=model, batch_size=8)
        fob.compute_representativeness(ds, model=model, batch_size=8)
        for field in ("uniqueness", "roi_uniqueness", "representativeness"):
            values = ds.values(field)
            assert len(values) == 25 and all(v is not None and 0 <= v <= 1 for v in values), field
        index = fob.compute_near_duplicates(ds, model=model, batch_size=8, threshold=1e-3)
        twins = {ds.first().id, ds.last().id}
        assert len(index.duplicate_ids) == 1 and set(index.duplicate_ids) < twins, index.duplicate_ids
        fob.compute_visualization(ds, model=model, method="pca", batch_size=8, brain_key="viz")
        fob.compute_visualization(ds, patches_field="gt", model=model, method="pca", batch_size=8, brain_key="viz_patches")
        assert ds.load_brain_results("viz").points.shape == (25, 2)
        assert ds.load_brain_results("viz_patches").points.shape == (25, 2)
        fob.compute_similarity(ds, model=model, batch_size=8, brain_key="sim")
        nearest = ds.sort_by_similarity(ds.first().id, k=2, brain_key="sim")
        assert set(nearest.values("filepath")) == {ds.first().filepath}, "the duplicate is the nearest"
    finally:
        model.close()
        ds.delete()


def test_a_gpu_model_run_without_batch_size_says_once_to_pass_one(graphs: dict[str, Path], images: fo.Dataset,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Without batch_size FiftyOne sends the model one image per call: on a GPU provider that leaves the
    GPU idle while each image is decoded (d: 20.9 images/s at 1 per call, 52.1 at 8, H200), silently.
    The model says so once, at the start of the run; not with batch_size, and not on the CPU (one
    512² image per batch there anyway). WebGPU on SwiftShader stands in for the GPU."""
    if not Path(SWIFTSHADER_ICD).exists():
        unavailable(f"{SWIFTSHADER_ICD} is missing (scripts/setup-test-packages.sh installs it)")

    def hints() -> list[str]:
        return [r.getMessage() for r in caplog.records if "without batch_size" in r.getMessage()]

    gpu = make_local_model(MODEL, parse_options(MODEL, {"image_size": 64}), {"fp32": graphs["fp32"]}, "fp32", "webgpu",
                           env={"VK_ICD_FILENAMES": SWIFTSHADER_ICD})
    try:
        assert gpu.provider == "webgpu"
        images.compute_embeddings(gpu, embeddings_field="with_batches", batch_size=4)
        assert hints() == []
        images.compute_embeddings(gpu, embeddings_field="one_by_one")
        images.compute_embeddings(gpu, embeddings_field="again")
        assert len(hints()) == 1 and hints()[0].startswith("C-RADIOv4 runs on webgpu, and without batch_size FiftyOne")
        assert all(e is not None for e in images.values("one_by_one"))
    finally:
        gpu.close()
    spatial = local(graphs, output_type="spatial", image_size=64)
    try:
        caplog.clear()
        images.apply_model(spatial, "hm")
        assert hints() == [], "on the CPU"
    finally:
        spatial.close()


@pytest.fixture
def videos(tmp_path: Path):
    """Two short videos (5 and 10 frames, 96×64) made by ffmpeg, which FiftyOne reads frames with."""
    if shutil.which("ffmpeg") is None:
        unavailable("no ffmpeg: FiftyOne reads video frames with it (scripts/setup-test-packages.sh installs it)")
    ds = fo.Dataset()
    for i, seconds in enumerate((1, 2)):
        path = tmp_path / f"v{i}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size=96x64:rate=5:duration={seconds}",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
        ds.add_sample(fo.Sample(filepath=str(path)))
    ds.compute_metadata()
    yield ds
    ds.delete()


def test_video_datasets_run_the_model_on_their_frames(graphs: dict[str, Path], videos: fo.Dataset, tmp_path: Path) -> None:
    """compute_embeddings on a video collection embeds every frame (RGB, as the frame is: the same as
    embedding that frame's pixels read with Pillow). apply_model gives heatmaps and zero-shot labels
    per frame where FiftyOne's frame loop can run (it needs torch and torchvision, whatever the
    model: the torchvision lane); without them it raises once, saying so, instead of failing each
    video alone."""
    assert videos.values("metadata.total_frame_count") == [5, 10]
    model = local(graphs)
    try:
        videos.compute_embeddings(model, embeddings_field="e", batch_size=4)
        frames = videos.values("frames.e")
        assert [len(f) for f in frames] == [5, 10] and all(e is not None and e.shape == (128,) for f in frames for e in f)
        first = videos.first().filepath
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", first, "-vf", "select=eq(n\\,2)", "-frames:v", "1",
                        str(tmp_path / "f2.png")], check=True)
        own = model.embed(np.asarray(Image.open(tmp_path / "f2.png").convert("RGB")))
        got = frames[0][2]
        assert float(own @ got / np.linalg.norm(own) / np.linalg.norm(got)) >= 0.99999, "frame 3 of the first video"
    finally:
        model.close()
    spatial = local(graphs, output_type="spatial")
    zero_shot = local(graphs, "fp32-text", classes=["dog", "cat"], embedding_space="text")
    try:
        if not zoo.HAS_DATA_LOADER:
            with pytest.raises(ValueError, match=r"apply_model on video frames needs torch and torchvision installed"):
                videos.apply_model(spatial, "hm", batch_size=4)
            assert "hm" not in videos.get_frame_field_schema()
            return
        videos.apply_model(spatial, "hm", batch_size=4, skip_failures=False)
        assert [[type(h).__name__ for h in f] for f in videos.values("frames.hm")] == [["Heatmap"] * 5, ["Heatmap"] * 10]
        videos.apply_model(zero_shot, "cls", skip_failures=False)  # batch_size None: the one-frame-at-a-time loop
        assert all(c is not None and c.label in ("dog", "cat") for f in videos.values("frames.cls") for c in f)
    finally:
        spatial.close()
        zero_shot.close()


@pytest.mark.skipif(not zoo.HAS_DATA_LOADER, reason="FiftyOne's data loaders need torch and torchvision")
@pytest.mark.parametrize("batch_size", [None, 2])
def test_patch_embeddings_through_the_data_loader_take_boxes_of_any_size(graphs: dict[str, Path], images: fo.Dataset,
                                                                           batch_size: int | None) -> None:
    """With torch + torchvision, compute_patch_embeddings reads the crops in FiftyOne's patch data loader,
    which np.stacks each image's crops unless the model says its batches are ragged: every image whose
    boxes differ in size failed ("all input arrays must have the same shape"), its patches None (or the
    run raised, with skip_failures=False); brain runs with patches_field= lost them too."""
    import fiftyone.utils.patches as foup

    boxes = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.5], [0.5, 0.1, 0.2, 0.8]]
    for sample in images:
        sample["gt"] = fo.Detections(detections=[fo.Detection(label="x", bounding_box=b) for b in boxes])
        sample.save()
    model = local(graphs)
    try:
        got = images.compute_patch_embeddings(model, "gt", batch_size=batch_size, skip_failures=False)
        for sample in images:
            pixels = np.asarray(Image.open(sample.filepath).convert("RGB"))
            crops = [foup.extract_patch(pixels, d) for d in sample.gt.detections]
            assert len({c.shape for c in crops}) == 3
            np.testing.assert_allclose(got[sample.id], np.stack(model.embed_all(crops)), rtol=0, atol=1e-6)
        # The full-image data loader still batches (batch_size is not dropped for ragged batches).
        assert not model.ragged_batches
    finally:
        model.close()
