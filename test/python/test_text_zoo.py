"""Text through FiftyOne, end to end: the zoo registered from the working tree, the shared upstream
fixture's C-RADIOv4 repo (HF files + the torch.hub file with the adaptor heads) and SigLIP2 repo
served by the loopback hub, the sidecar compiling the text variant itself. Prompts, zero-shot
classification, similarity search by text, the DINOv3 space, and bad input."""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fiftyone as fo
import fiftyone.brain as fob
import fiftyone.zoo as foz
import numpy as np
import pytest
from safetensors.numpy import load_file
from sidecar_cli import REPO

sys.path.insert(0, str(REPO / "scripts"))
from loopback import fake_hub, source_archive  # noqa: E402

H = "nv_labs/c-radio_v4-h"
FIXTURE = REPO.parent / "shared" / "fixtures" / "upstream-adaptor-golden"
pytestmark = pytest.mark.skipif(not (FIXTURE / "reference_index.json").exists(), reason=f"no fixture at {FIXTURE}")
SIZE = (256, 384)  # the fixture image's own size: no resampling, so outputs compare with upstream's


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_file(str(FIXTURE / "reference.safetensors"))


@pytest.fixture(scope="module")
def index() -> dict:
    return json.loads((FIXTURE / "reference_index.json").read_text())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    """Its own model-zoo folder and Hugging Face cache: the same zoo names as the other FiftyOne
    tests, served here from other checkpoints."""
    root = tmp_path_factory.mktemp("text-zoo")
    repos = {"nvidia/C-RADIOv4-H": FIXTURE / "C-RADIOv4-H",
             "google/siglip2-giant-opt-patch16-384": FIXTURE / "siglip2-giant-opt-patch16-384"}
    with pytest.MonkeyPatch.context() as mp, fake_hub(repos) as endpoint, source_archive() as url:
        mp.setattr(fo.config, "model_zoo_dir", str(root / "zoo"))
        mp.setenv("HF_HUB_CACHE", str(root / "hf"))
        mp.setenv("HF_ENDPOINT", endpoint)
        foz.register_zoo_model_source(url, overwrite=True)
        yield root


@pytest.fixture(scope="module")
def dataset(zoo):
    ds = fo.Dataset()
    ds.add_sample(fo.Sample(filepath=str(FIXTURE / "synthetic_384x256.jpg")))
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def text_model(zoo):
    model = foz.load_zoo_model(H, embedding_space="text", image_size=SIZE, device="cpu")
    yield model
    model.close()


def test_prompts_embed_like_upstream(text_model, ref, index) -> None:
    assert text_model.can_embed_prompts
    got = text_model.embed_prompts(index["text"]["prompts"])
    want = ref["text.embeddings_normalized"]
    assert got.shape == want.shape
    worst = max(_rel_l2(g, w) for g, w in zip(got, want))
    assert worst <= 1e-6, worst
    np.testing.assert_allclose(text_model.embed_prompt(index["text"]["prompts"][0]), got[0], rtol=0, atol=1e-7)


def test_image_embeddings_are_in_the_text_space(text_model, dataset, ref) -> None:
    emb = dataset.compute_embeddings(text_model)
    assert emb.shape == (1, 40)
    # JPEG decoded by sharp here, by PIL upstream: the same pixels up to the decoders' rounding.
    assert _cos(emb[0], ref["image_jpeg_256x384.siglip2-g.summary"][0]) >= 0.9999


def test_zero_shot_classification(zoo, dataset, ref, index) -> None:
    prompts = index["text"]["prompts"][:8]
    cos = ref["zeroshot.cosine"][3][:8]  # row 3: the JPEG; normalised summary · normalised text
    scale = float(ref["siglip.logit_scale"][0])
    classes = [p for p in prompts if p.strip()]  # a class name must not be blank
    keep = [i for i, p in enumerate(prompts) if p.strip()]
    model = foz.load_zoo_model(H, classes=classes, text_prompt=None, image_size=SIZE, device="cpu")
    try:
        assert model.has_logits and model.classes == classes
        dataset.apply_model(model, "zero_shot", store_logits=True)
        label = dataset.first()["zero_shot"]
        logits = np.exp(scale) * cos[keep]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert label.label == classes[int(np.argmax(probs))]
        assert abs(label.confidence - probs.max()) < 1e-3
        np.testing.assert_allclose(label.logits, logits, atol=2e-3)
    finally:
        model.close()
    sig = foz.load_zoo_model(H, classes=classes, text_prompt=None, image_size=SIZE, device="cpu", zero_shot_scores="sigmoid")
    try:
        label = sig.predict_all([str(FIXTURE / "synthetic_384x256.jpg")])[0]
        want = ref["zeroshot.siglip_probs"][3][keep]
        assert label.label == classes[int(np.argmax(want))]
        assert abs(label.confidence - want.max()) < 1e-3
    finally:
        sig.close()


def test_threads_classifying_at_once_embed_the_class_prompts_once(zoo, dataset) -> None:
    model = foz.load_zoo_model(H, classes=["dog", "cat"], image_size=SIZE, device="cpu")
    calls = []
    real = model._embed_text

    def counted(prompts):  # the real call, counted; slow enough that the second thread comes while it runs
        calls.append(len(prompts))
        time.sleep(0.5)
        return real(prompts)

    model._embed_text = counted
    try:
        path = dataset.first().filepath
        with ThreadPoolExecutor(2) as pool:
            labels = [f.result() for f in [pool.submit(model.predict_all, [path]) for _ in range(2)]]
        assert calls == [2], calls
        assert labels[0][0].label == labels[1][0].label and labels[0][0].confidence == labels[1][0].confidence
    finally:
        model.close()


def test_prompt_ensembling_over_the_openai_templates(zoo, dataset) -> None:
    model = foz.load_zoo_model(H, classes=["dog", "cat", "red car"], prompt_templates="openai", image_size=SIZE, device="cpu")
    try:
        label = model.predict_all([dataset.first().filepath])[0]
        assert label.label in ("dog", "cat", "red car") and 0 < label.confidence <= 1
        matrix = model._class_matrix()[0]
        # Each class is the re-normalised mean of its 80 template embeddings.
        dog = model.embed_prompts([t.replace("{}", "dog") for t in model.options.templates])
        mean = dog.mean(0)
        np.testing.assert_allclose(matrix[0], mean / np.linalg.norm(mean), atol=1e-6)
    finally:
        model.close()


def test_text_search_with_the_brain(zoo, dataset, tmp_path: Path) -> None:
    ds = fo.Dataset()
    rng = np.random.default_rng(3)
    from PIL import Image
    for i in range(6):
        p = tmp_path / f"s{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8)).save(p)
        ds.add_sample(fo.Sample(filepath=str(p)))
    try:
        fob.compute_similarity(ds, model=H, model_kwargs={"embedding_space": "text", "image_size": SIZE, "device": "cpu"},
                               brain_key="txt", embeddings="txt_emb")
        results = ds.load_brain_results("txt")
        assert results.config.supports_prompts
        view = ds.sort_by_similarity("a photo of a dog", k=3, brain_key="txt")
        assert len(view) == 3
        # The order is the cosine order of the stored embeddings with the prompt's embedding.
        model = results.get_model()
        q = model.embed_prompt("a photo of a dog")
        embs = np.stack(ds.values("txt_emb"))
        order = np.argsort(-(embs / np.linalg.norm(embs, axis=1, keepdims=True)) @ q)[:3]
        assert view.values("id") == [ds.values("id")[i] for i in order]
        # The App's search calls embed_prompts again and again inside `with model:`: one sidecar serves all.
        pid = model._sidecar.pid
        for _ in range(3):
            ds.sort_by_similarity("a red car", k=2, brain_key="txt")
        assert results.get_model()._sidecar.pid == pid and model._sidecar.alive
    finally:
        ds.delete()


def test_dinov3_space(zoo, dataset, ref) -> None:
    model = foz.load_zoo_model(H, embedding_space="dinov3", image_size=SIZE, device="cpu")
    try:
        assert not model.can_embed_prompts
        emb = dataset.compute_embeddings(model)
        assert _cos(emb[0], ref["image_jpeg_256x384.dino_v3_7b.summary"][0]) >= 0.9999
        with pytest.raises(ValueError, match="load it with embedding_space='text'"):
            model.embed_prompts(["a dog"])
    finally:
        model.close()


def test_bad_prompts_and_classes(text_model, zoo) -> None:
    with pytest.raises(ValueError, match=r"prompt 1: must be a string, got int"):
        text_model.embed_prompts(["ok", 123])
    with pytest.raises(ValueError, match=r"prompt 0: is not valid Unicode"):
        text_model.embed_prompts(["\ud800 lone surrogate"])
    out = text_model._embed_text(["a dog", "x" * 10_001, ""])
    assert out.results[0].ok and out.results[2].ok
    assert out.results[1].error_code == "INVALID_ARGUMENT" and "10001 characters" in out.results[1].error
    for bad, match in [([], "non-empty list"), ("dog", "non-empty list"), (["dog", ""], "not a class name"),
                       (["dog", "dog"], "appears more than once")]:
        with pytest.raises(ValueError, match=match):
            foz.load_zoo_model(H, classes=bad)
    with pytest.raises(ValueError, match="needs the text-aligned space"):
        foz.load_zoo_model(H, classes=["dog"], embedding_space="dinov3")


def test_many_classes_is_a_defined_result(zoo, dataset) -> None:
    classes = [f"class {i}" for i in range(100_000)]
    model = foz.load_zoo_model(H, classes=classes, image_size=SIZE, device="cpu")
    try:
        t = time.perf_counter()
        label = model.predict_all([dataset.first().filepath])[0]
        print(f"zero-shot over {len(classes)} classes: {time.perf_counter() - t:.1f} s")
        assert label.label in classes and 0 < label.confidence <= 1
    finally:
        model.close()
