"""Smoke test: a real FiftyOne (with its bundled mongod) and fiftyone-brain.

Checks that the environment installed by .ci/setup-python.sh works end to end:
a non-persistent dataset of generated images, random embeddings,
similarity index + sort_by_similarity, uniqueness, and a UMAP visualization.

"""

# FiftyOne's isolation variables (private database dir, zoo dirs, config) are set in conftest.py,
# before any test module imports fiftyone.

import fiftyone as fo
import fiftyone.brain as fob
import numpy as np
import pytest
from PIL import Image

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
