"""End to end under a real FiftyOne with a real MongoDB: the zoo source registered from an archive
of the working tree served on loopback, checkpoints downloaded from a loopback Hugging Face hub,
the sidecar built, compiled and spawned by the zoo code itself."""
from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import subprocess
import sys
import time
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.brain as fob
import fiftyone.zoo as foz
import numpy as np
import pytest
from PIL import Image
from sidecar_cli import REPO, make_checkpoint, sidecar_command

sys.path.insert(0, str(REPO / "scripts"))
from loopback import fake_hub, source_archive  # noqa: E402

H = "nv_labs/c-radio_v4-h"
SO = "nv_labs/c-radio_v4-so400m"


def _sidecar_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "dist/cli.js serve"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hub")
    h = make_checkpoint(root / "h", "tiny")
    so = make_checkpoint(root / "so", "tiny-so400m")
    with fake_hub({"nvidia/C-RADIOv4-H": h, "nvidia/C-RADIOv4-SO400M": so}) as endpoint:
        os.environ["HF_ENDPOINT"] = endpoint
        yield {"endpoint": endpoint, "h": h, "so": so}


@pytest.fixture(scope="module")
def source_url():
    with source_archive() as url:
        yield url


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    samples = []
    # 24 images (representativeness clusters into 20), mixed aspect ratios.
    sizes = [(480, 640), (640, 480), (300, 300), (360, 640), (500, 375), (256, 256)]
    for i, (h, w) in enumerate(sizes * 4):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * (i + 1)) % 256, (yy * 2) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        path = root / f"img{i}.jpg"
        Image.fromarray(img).save(path, quality=90)
        samples.append(fo.Sample(filepath=str(path)))
    ds = fo.Dataset()
    ds.add_samples(samples)
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def registered(hub, source_url: str) -> str:
    foz.register_zoo_model_source(source_url, overwrite=True)
    return source_url


@pytest.fixture(scope="module")
def model_h(registered):
    model = foz.load_zoo_model(H)
    yield model
    model.close()  # idempotent


def test_compute_embeddings_equals_direct_sidecar(model_h, dataset) -> None:
    dataset.compute_embeddings(model_h, embeddings_field="radio_embeddings", batch_size=4)
    embs = dataset.values("radio_embeddings")
    assert all(e is not None for e in embs)
    e0 = np.asarray(embs[0])
    assert e0.shape == (128,) and e0.dtype == np.float32
    # The same image straight through the sidecar client gives the same vector.
    direct = model_h._client_now().embed([{"id": "x", "path": dataset.first().filepath}], _opts("SUMMARY"))
    np.testing.assert_array_equal(direct[0].array, e0)


def _opts(kind: str):
    """EmbedOptions from the zoo's own copy of the client (the module FiftyOne imported)."""
    import sys
    mod = next(m for n, m in sys.modules.items() if n.endswith(".client.grpc_client"))
    return mod.EmbedOptions(output=kind)


def test_quantize_compiles_an_int8_graph_close_to_fp32(model_h, registered, dataset) -> None:
    exact = np.stack(dataset.compute_embeddings(model_h, batch_size=4))
    model = foz.load_zoo_model(H, quantize=True, device="cpu", cache=False)
    try:
        info = model._client_now().info()
        assert [m.precision for m in info.graphs] == ["int8"], info
        approx = np.stack(dataset.compute_embeddings(model, batch_size=4))
    finally:
        model.close()
    cos = (approx * exact).sum(1) / np.linalg.norm(approx, axis=1) / np.linalg.norm(exact, axis=1)
    assert cos.min() >= 0.99 and not np.array_equal(approx, exact), cos


def _providers_report(*args: str) -> dict:
    """What this checkout's `radio-sidecar providers` says, run with the environment the zoo gives it."""
    sys.path.insert(0, str(REPO))
    from client.gpu_libs import library_env

    proc = subprocess.run([*sidecar_command(), "providers", *args], capture_output=True, text=True, env=library_env(),
                          timeout=300)
    return json.loads(proc.stdout)


def test_auto_device_runs_where_the_sidecars_probe_says(model_h) -> None:
    report = _providers_report()
    assert (model_h.provider, model_h.precision) == (report["chosen"], report["precision"])
    # Why the better providers were not taken (the zoo's copy names its own onnxruntime-node folder).
    assert [n.split(" (")[0] for n in model_h.provider_notes] == [n.split(" (")[0] for n in report["notTaken"]]
    assert f"provider={report['chosen']!r}" in repr(model_h)
    # The sidecar was started with that provider explicitly, on a graph of that precision.
    info = model_h.info()
    assert (info.provider, info.provider_requested) == (report["chosen"], report["chosen"])
    assert [m.precision for m in info.graphs] == [report["precision"]]
    if report["chosen"] == "cpu":
        assert [n.split(":")[0] for n in model_h.provider_notes] == ["cuda", "webgpu"]


def test_device_cpu_probes_nothing(model_h, registered) -> None:
    model = foz.load_zoo_model(H, device="cpu", cache=False)
    try:
        assert (model.provider, model.precision, model.provider_notes) == ("cpu", "fp32", ())
        info = model.info()
        assert (info.provider, info.provider_requested, list(info.provider_probes)) == ("cpu", "cpu", [])
        # The sidecar's libuv pool has room for one decode per core (libuv's own default is 4).
        environ = Path(f"/proc/{model._sidecar.pid}/environ").read_bytes().split(b"\0")
        uv = [kv.split(b"=", 1)[1] for kv in environ if kv.startswith(b"UV_THREADPOOL_SIZE=")]
        assert uv and int(uv[0]) == int(os.environ.get("UV_THREADPOOL_SIZE") or len(os.sched_getaffinity(0)) + 4), uv
    finally:
        model.close()


def test_mixed_precision_on_cpu_runs_fp32_with_one_warning(model_h, registered, dataset) -> None:
    if model_h.provider != "cpu":
        pytest.skip(f"auto chose {model_h.provider} here, where use_mixed_precision=True runs an fp16 graph")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = foz.load_zoo_model(H, use_mixed_precision=True, cache=False)
    ours = [str(w.message) for w in caught if "use_mixed_precision=True" in str(w.message)]
    assert len(ours) == 1, ours
    assert "slower than fp32" in ours[0] and "running the fp32 graph" in ours[0] and "quantize=True" in ours[0]
    try:
        assert (model.provider, model.precision) == ("cpu", "fp32")
        assert [m.precision for m in model.info().graphs] == ["fp32"]
        assert model._sidecar is model_h._sidecar  # the same fp32 graph, so the same sidecar
        view = dataset.limit(4)
        np.testing.assert_array_equal(np.stack(view.compute_embeddings(model, batch_size=4)),
                                      np.stack(view.compute_embeddings(model_h, batch_size=4)))
    finally:
        model.close()


def test_device_cuda_without_cuda_fails_at_load(registered) -> None:
    report = _providers_report("--provider", "cuda")
    if report["chosen"] == "cuda":
        pytest.skip("CUDA is usable here")
    with pytest.raises(RuntimeError, match=r"^device='cuda': the cuda execution provider was asked for but cannot be "
                                           r"used: .*never falls back"):
        foz.load_zoo_model(H, device="cuda", cache=False)


def test_so400m_loads_and_embeds(registered, dataset) -> None:
    model = foz.load_zoo_model(SO)
    try:
        emb = dataset.compute_embeddings(model, batch_size=3)
        assert emb.shape == (len(dataset), 144)
    finally:
        model.close()


def test_a_graph_an_earlier_version_compiled_is_compiled_again(registered, dataset) -> None:
    """Graphs on disk outlive upgrades: one in another format is compiled again, not fed wrong pixels."""
    model = foz.load_zoo_model(SO)
    try:
        before = dataset.compute_embeddings(model, batch_size=3)
    finally:
        model.close()
    metadata = Path(foz.find_zoo_model(SO)).with_suffix("") / "fp32" / "metadata.json"
    old = {**json.loads(metadata.read_text()), "format": "radio-onnx/1"}
    metadata.write_text(json.dumps(old))
    model = foz.load_zoo_model(SO, cache=False)  # FiftyOne's cached model would skip load_model
    try:
        after = dataset.compute_embeddings(model, batch_size=3)
    finally:
        model.close()
    current = json.loads((REPO / "package.json").read_text())["radioGraphFormat"]
    assert json.loads(metadata.read_text())["format"] == current != "radio-onnx/1"
    np.testing.assert_array_equal(after, before)


@contextmanager
def _own_zoo(root: Path, source_url: str):
    """A model-zoo folder and Hugging Face cache of the test's own, with the source registered there
    (the module's are put back on exit); the test serves its hub with _serving(mp, ...)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fo.config, "model_zoo_dir", str(root / "zoo"))
        mp.setenv("HF_HUB_CACHE", str(root / "hf"))
        foz.register_zoo_model_source(source_url, overwrite=True)
        yield mp


@contextmanager
def _serving(mp: pytest.MonkeyPatch, repos: dict[str, Path]):
    """A loopback hub serving these repos (each one commit, on main) for as long as it is open."""
    with fake_hub(repos) as endpoint:
        mp.setenv("HF_ENDPOINT", endpoint)
        yield


def _source(graph: Path) -> dict:
    return json.loads((graph / "metadata.json").read_text())["source"]


def test_an_upgrade_compiles_the_graph_again_from_the_commit_it_was_set_up_from(source_url, dataset, runtime_dir: Path,
                                                                              tmp_path: Path) -> None:
    """A graph an earlier version compiled is compiled again from the checkpoint already downloaded,
    the commit it was set up from. It was compiled from whatever the default branch held by then:
    another download, other weights after an upgrade, and revision= pinned to the set-up commit raised."""
    first, moved_on = make_checkpoint(tmp_path / "a", "tiny"), make_checkpoint(tmp_path / "b", "tiny", seed=1)
    view = dataset.limit(4)
    with _own_zoo(tmp_path, source_url) as mp:
        with _serving(mp, {"nvidia/C-RADIOv4-H": first}):
            model = foz.load_zoo_model(H, device="cpu", cache=False)
            try:
                before = np.stack(view.compute_embeddings(model, batch_size=4))
            finally:
                model.close()
        base = Path(foz.find_zoo_model(H)).with_suffix("") / "fp32"
        commit = _source(base)["revision"]
        metadata = json.loads((base / "metadata.json").read_text())
        (base / "metadata.json").write_text(json.dumps({**metadata, "format": "radio-onnx/1"}))
        with _serving(mp, {"nvidia/C-RADIOv4-H": moved_on}):  # upstream's main moved on meanwhile
            model = foz.load_zoo_model(H, device="cpu", cache=False, revision=commit)
            try:
                after = np.stack(view.compute_embeddings(model, batch_size=4))
            finally:
                model.close()
        assert json.loads((base / "metadata.json").read_text())["format"] != "radio-onnx/1"
        assert _source(base)["revision"] == commit
    np.testing.assert_array_equal(after, before)


def test_a_model_set_up_again_from_another_commit_compiles_its_variants_again(source_url, dataset, runtime_dir: Path,
                                                                             tmp_path: Path) -> None:
    """Set up again from another commit (foz.delete_zoo_model, then a load: how revision='s error says to
    use another), the fp32 graph is compiled from it, and so is every variant, when next asked for. The
    variants compiled from the first commit were taken as current: quantize=True ran the old weights."""
    first, other = make_checkpoint(tmp_path / "a", "tiny"), make_checkpoint(tmp_path / "b", "tiny", seed=1)
    view = dataset.limit(4)
    with _own_zoo(tmp_path, source_url) as mp:
        with _serving(mp, {"nvidia/C-RADIOv4-H": first}):
            foz.load_zoo_model(H, quantize=True, device="cpu", cache=False).close()
        foz.delete_zoo_model(H)
        with _serving(mp, {"nvidia/C-RADIOv4-H": other}):
            exact_model = foz.load_zoo_model(H, device="cpu", cache=False)
            model = foz.load_zoo_model(H, quantize=True, device="cpu", cache=False)
            try:
                exact = np.stack(view.compute_embeddings(exact_model, batch_size=4))
                approx = np.stack(view.compute_embeddings(model, batch_size=4))
            finally:
                model.close()
                exact_model.close()
        graphs = Path(foz.find_zoo_model(H)).with_suffix("")
        assert _source(graphs / "int8")["dir"] == _source(graphs / "fp32")["dir"]
    cos = (approx * exact).sum(1) / np.linalg.norm(approx, axis=1) / np.linalg.norm(exact, axis=1)
    assert cos.min() >= 0.99, cos


def test_a_text_variant_whose_text_tower_failed_to_compile_is_compiled_again(source_url, runtime_dir: Path,
                                                                            tmp_path: Path) -> None:
    """compile --text wrote the graph, then the text tower beside it: the graph's metadata.json, which
    says a folder is done, came before the text tower, and one that failed (here a SigLIP folder whose
    tokenizer is broken; as well a kill or a full disk) left a folder the next load took as done, and
    that model could not embed text."""
    import shutil

    from sidecar_cli import sidecar

    ckpt, siglip = tmp_path / "h", tmp_path / "siglip"
    sidecar("make-checkpoint", "--preset", "tiny-text", "--siglip", str(siglip), "--out", str(ckpt))
    broken = shutil.copytree(siglip, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("{}")
    tower = "google/siglip2-giant-opt-patch16-384"
    with _own_zoo(tmp_path, source_url) as mp:
        with _serving(mp, {"nvidia/C-RADIOv4-H": ckpt, tower: broken}):
            with pytest.raises(RuntimeError, match=r"set-up failed at 'compiling nv_labs/c-radio_v4-h \(fp32-text\)'"):
                foz.load_zoo_model(H, embedding_space="text", device="cpu", cache=False)
        with _serving(mp, {"nvidia/C-RADIOv4-H": ckpt, tower: siglip}):  # fixed upstream
            model = foz.load_zoo_model(H, embedding_space="text", device="cpu", cache=False)
            try:
                assert model.embed_prompts(["a photo of a cat"]).shape[0] == 1
            finally:
                model.close()


def test_heatmaps_and_dense_features(registered, dataset, tmp_path: Path) -> None:
    spatial = foz.load_zoo_model(H, output_type="spatial", apply_smoothing=True, smoothing_sigma=1.51,
                                 feature_format="NCHW")
    try:
        dataset.apply_model(spatial, "radio_heatmap", batch_size=4)
        maps = dataset.values("radio_heatmap")
        for hm in maps:
            assert hm is not None and hm.map.dtype == np.uint8
            # 1, not 0, at the bottom: the App leaves 0-valued pixels unpainted (holes in the map).
            assert hm.map.min() == 1 and hm.map.max() == 255 and hm.range == [0, 255]
            assert max(hm.map.shape) <= 512
        first = maps[0].map.copy()
        dataset.apply_model(spatial, "radio_heatmap2", batch_size=2, output_dir=str(tmp_path / "maps"))
        again = dataset.values("radio_heatmap2")
        assert again[0].map_path and Path(again[0].map_path).exists()
        np.testing.assert_array_equal(np.asarray(Image.open(again[0].map_path)), first)  # deterministic
        # Dense features differ in shape between aspect ratios: store them per sample, in an
        # ArrayField (compute_embeddings would otherwise declare a 1-D VectorField).
        dataset.add_sample_field("radio_dense", fo.ArrayField)
        dataset.compute_embeddings(spatial, embeddings_field="radio_dense", batch_size=4)
        # Read back from the database: through its torch data loader (torchvision installed: the
        # torchvision lane), FiftyOne 1.22 writes the field through a select_fields() view with async
        # writes, so Sample objects already in memory keep their old value (None) until reloaded.
        for dense, filepath in zip(*dataset.values(["radio_dense", "filepath"])):
            c, h, w = np.asarray(dense).shape
            assert c == 64 and h * w >= 16 * 16
            img_h, img_w = Image.open(filepath).size[::-1]
            assert abs(w / h - img_w / img_h) < 0.35  # aspect kept (snapped to a bucket)
    finally:
        spatial.close()
    nlc = foz.load_zoo_model(H, output_type="spatial", feature_format="NLC")
    try:
        f = nlc.embed(dataset.first().filepath)
        assert f.ndim == 2 and f.shape[1] == 64
    finally:
        nlc.close()


def test_brain(model_h, dataset) -> None:
    if "radio_embeddings" not in dataset.get_field_schema():
        dataset.compute_embeddings(model_h, embeddings_field="radio_embeddings")
    fob.compute_similarity(dataset, embeddings="radio_embeddings", brain_key="radio_sim")
    view = dataset.sort_by_similarity(dataset.first().id, k=3, brain_key="radio_sim")
    assert view.first().id == dataset.first().id
    fob.compute_uniqueness(dataset, embeddings="radio_embeddings")
    fob.compute_representativeness(dataset, embeddings="radio_embeddings")
    fob.compute_visualization(dataset, embeddings="radio_embeddings", method="umap", brain_key="radio_umap",
                              num_neighbors=3)
    assert dataset.bounds("uniqueness")[1] <= 1.0


def test_corrupt_image_is_reported_rest_labelled(model_h, dataset, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = dataset.clone()
    try:
        ds.add_sample(fo.Sample(filepath=str(bad)))
        ds.compute_embeddings(model_h, embeddings_field="e", batch_size=16, skip_failures=True)
        values = dict(zip(ds.values("filepath"), ds.values("e")))
        assert values[str(bad)] is None
        assert all(v is not None for k, v in values.items() if k != str(bad))
        assert any(f[0] == str(bad) for f in model_h.failures)
    finally:
        ds.delete()


@pytest.fixture(scope="module")
def format_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """test/corpus/make-corpus.ts: the formats sharp can't read (each item's `client` outcome) and the
    PNGs of the pictures they show."""
    out = tmp_path_factory.mktemp("formats")
    subprocess.run([str(REPO / "node_modules" / ".bin" / "tsx"), "test/corpus/make-corpus.ts", str(out)], cwd=REPO,
                   check=True, capture_output=True, timeout=120)
    items = json.loads((out / "manifest.json").read_text())["items"]
    formats = [i for i in items if "client" in i]
    twins = {i["client"]["sameAs"] for i in formats if i["client"]["ok"]}
    return {"formats": formats, "twins": [i for i in items if i["name"] in twins]}


@contextmanager
def _remote_sidecar(model, tmp: Path):
    """A sidecar of our own on a unix socket, serving model's graph: the zoo model reaches it as a
    remote one (server=...), so it sends file bytes, not paths."""
    (name, graph), = model._sidecar.spec.graphs
    sock = tmp / "remote.sock"
    proc = subprocess.Popen([*sidecar_command(), "serve", "--socket", str(sock), "--graph", f"{name}={graph}",
                             "--threads", "2", "--http-port", "auto"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "RADIO_LOG_LEVEL": "warn"})
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("socket"), proc.stderr

        def metric(name: str) -> float:
            text = urllib.request.urlopen(f"http://127.0.0.1:{ready['httpPort']}/metrics", timeout=10).read().decode()
            return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                       if line.startswith((name + " ", name + "{")))

        yield f"unix:{sock}", metric
    finally:
        proc.kill()
        proc.wait(10)


def test_every_format_pillow_reads_is_embedded(model_h, registered, format_corpus, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """One sample per format: BMP (24, 32, 8-bit palette), PPM, PGM (8, 16-bit), TGA, ICO, JP2 get
    the embedding of the same picture's PNG (cosine >= 0.9999), through the local sidecar (paths)
    and a remote one (bytes); the truncated BMP and the text .bmp are None, each with a failure
    logged and recorded that names the file and both decoders' reasons; nothing else fails."""
    mimetypes.add_type("image/x-tga", ".tga")  # FiftyOne takes media types from mimetypes, which lacks TGA
    formats, twins = format_corpus["formats"], format_corpus["twins"]
    ds = fo.Dataset()
    remote = None
    try:
        ds.add_samples([fo.Sample(filepath=i["path"], item=i["name"]) for i in twins + formats])
        with _remote_sidecar(model_h, tmp_path) as (address, metric):
            remote = foz.load_zoo_model(H, server=address)
            runs = {}
            for where, model in (("local", model_h), ("remote", remote)):
                before = len(model.failures)
                caplog.clear()
                with caplog.at_level(logging.WARNING):
                    ds.compute_embeddings(model, embeddings_field=f"e_{where}", batch_size=8, skip_failures=True)
                runs[where] = (dict(zip(ds.values("item"), ds.values(f"e_{where}"))), model.failures[before:],
                               [r.getMessage() for r in caplog.records if "C-RADIOv4" in r.getMessage()])
            # Nothing computed twice: each readable image once; each refused format sent back once,
            # as pixels, only when Pillow read it.
            readable = len(twins) + sum(i["client"]["ok"] for i in formats)
            assert (metric("radio_images_total"), metric("radio_image_failures_total")) == (readable, len(formats))
        table = []
        for where, (values, failures, logged) in runs.items():
            by_path = {f[0]: f for f in failures}
            for item in twins:
                assert values[item["name"]] is not None, f"{where}: {item['name']}"
            for item in formats:
                got, want = values[item["name"]], item["client"]
                if want["ok"]:
                    assert got is not None, f"{where}: {item['name']} not labelled: {by_path.get(item['path'])}"
                    a, b = np.asarray(got), np.asarray(values[want["sameAs"]])
                    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
                    assert cos >= 0.9999, f"{where}: {item['name']} vs {want['sameAs']}: cosine {cos}"
                    table.append((where, item["name"], f"labelled (cosine {cos:.6f} to its PNG)"))
                else:
                    assert got is None, f"{where}: {item['name']} labelled"
                    _, code, message = by_path[item["path"]]
                    assert code == want["code"] and re.search(want["message"], message), (where, code, message)
                    assert json.dumps(item["path"]) in message, message  # names the file
                    assert any(item["path"] in line and code in line for line in logged), logged
                    table.append((where, item["name"], f"{code}: {message}"))
            expected = sorted(i["path"] for i in formats if not i["client"]["ok"])
            assert sorted(f[0] for f in failures) == expected, f"{where}: nothing else fails: {failures}"
        # Bytes to a remote sidecar give the same vectors as paths to the local one.
        for name, local in runs["local"][0].items():
            if local is not None:
                np.testing.assert_allclose(runs["remote"][0][name], local, atol=1e-5, err_msg=name)
        print("\nformat table (FiftyOne compute_embeddings):")
        for where, name, outcome in table:
            print(f"  {where:6} {name:14} {outcome}")
    finally:
        if remote is not None:
            remote.close()
        ds.delete()


def test_bad_option_lists_valid_ones(registered) -> None:
    with pytest.raises(ValueError, match="output_type='dense' is not valid; use one of 'summary', 'spatial'"):
        foz.load_zoo_model(H, output_type="dense")
    with pytest.raises(ValueError, match="unknown option"):
        foz.load_zoo_model(H, colour="blue")


def test_revision_is_checked_not_ignored(model_h, registered) -> None:
    """The graphs are compiled once, at set-up, from the revision downloaded then: revision= naming
    another raises, saying which commit they come from and how to get another. It was accepted and
    ignored: the model ran on whatever revision had been set up."""
    source = json.loads((Path(foz.find_zoo_model(H)).with_suffix("") / "fp32" / "metadata.json").read_text())["source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["revision"]), source
    with pytest.raises(ValueError, match=rf"revision='v9': .* compiled from nvidia/C-RADIOv4-H at commit "
                                         rf"{source['revision']}.*RADIO_HF_REVISION"):
        foz.load_zoo_model(H, revision="v9", cache=False)
    for same in (source["revision"], source["revision"][:7]):
        foz.load_zoo_model(H, revision=same, cache=False).close()


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


@pytest.mark.parametrize("shared", [True, False])
def test_sidecar_killed_mid_run_is_restarted(registered, dataset, shared: bool) -> None:
    """SIGKILL the sidecar between batches: the model restarts it (shared: a fresh shared one, the
    stale socket cleaned) and every sample is labelled once."""
    import signal

    model = foz.load_zoo_model(H, cache=False, image_size=(224, 224), shared=shared)
    ds = dataset.clone()
    try:
        first = model._sidecar.pid
        calls = {"n": 0}
        real_embed_all = model.embed_all

        def embed_all_then_kill(args):  # kill after the first batch went through
            out = real_embed_all(args)
            calls["n"] += 1
            if calls["n"] == 1:
                os.kill(model._sidecar.pid, signal.SIGKILL)
                if not shared:
                    model._sidecar.process.wait(10)
                assert _wait_gone(first)
            return out

        model.embed_all = embed_all_then_kill
        ds.compute_embeddings(model, embeddings_field="e", batch_size=8)
        assert all(v is not None for v in ds.values("e"))
        assert model._sidecar.pid != first
    finally:
        ds.delete()
        model.close()


def test_private_sidecar_stops_with_its_last_model(registered, dataset) -> None:
    # shared=False, same graph: the process-wide registry shares one private sidecar between them.
    one = foz.load_zoo_model(H, cache=False, shared=False)
    other = foz.load_zoo_model(H, output_type="spatial", feature_format="NLC", cache=False, shared=False)
    other.embed(dataset.first().filepath)
    assert other._sidecar is one._sidecar
    pid = other._sidecar.pid
    other.close()
    assert pid in _sidecar_pids()  # `one` still uses it
    one.close()
    assert _wait_gone(pid)
    assert pid not in _sidecar_pids()


def test_shared_sidecar_outlives_its_models(model_h, registered, dataset) -> None:
    # The default is the host's shared sidecar: closing every model of this process only ends its lease.
    other = foz.load_zoo_model(H, output_type="spatial", feature_format="NLC", cache=False)
    other.embed(dataset.first().filepath)
    assert other._sidecar is model_h._sidecar and type(other._sidecar).__name__ == "SharedSidecar"
    pid = other._sidecar.pid
    other.close()
    model_h.close()
    time.sleep(1)
    assert _running(pid), "a shared sidecar stays up for other processes until its idle timeout"


CHILD = """
import sys
import fiftyone.zoo as foz
model = foz.load_zoo_model("nv_labs/c-radio_v4-h", shared=False)
model.embed(sys.argv[1])
print(model._sidecar.pid, flush=True)
sys.stdin.readline()  # hold on until the test has seen the sidecar, then exit (or be SIGKILLed)
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_orphan_sidecar(registered, dataset, how: str) -> None:
    """shared=False: a Python process that exits, or is SIGKILLed, leaves no sidecar behind."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, dataset.first().filepath],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdin is not None and proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert pid in _sidecar_pids()
    if how == "sigkill":
        proc.kill()
    proc.stdin.close()  # the go-ahead: a living child exits now
    proc.wait(60)
    deadline = time.monotonic() + 20
    while pid in _sidecar_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in _sidecar_pids()


# -- one shared sidecar per host: several Python processes -------------------------------------------

SHARED_CHILD = """
import json, os, sys, time
import fiftyone as fo
import fiftyone.zoo as foz
paths, name, kwargs, go = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
model = foz.load_zoo_model("nv_labs/c-radio_v4-h", cache=False, **kwargs)
ds = fo.Dataset(f"{name}-{os.getpid()}")  # a killed child leaves its dataset; a rerun (the torchvision lane) must not collide
ds.add_samples([fo.Sample(filepath=p) for p in paths])
print(json.dumps({"event": "loaded", "pid": model._sidecar.pid}), flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
print(json.dumps({"event": "started"}), flush=True)
ds.compute_embeddings(model, embeddings_field="e", batch_size=2)
print(json.dumps({"event": "done", "labelled": sum(v is not None for v in ds.values("e")), "n": len(ds),
                  "pid": model._sidecar.pid}), flush=True)
ds.delete()
"""


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch):
    """A runtime dir of the test's own (short: unix socket paths), for it and its child processes."""
    import shutil
    import tempfile

    from conftest import stop_shared_sidecars

    d = tempfile.mkdtemp(prefix="rr-", dir="/tmp")
    monkeypatch.setenv("RADIO_RUNTIME_DIR", d)
    yield Path(d)
    stop_shared_sidecars(d)
    shutil.rmtree(d, ignore_errors=True)


def _sidecars_in(d: Path) -> set[int]:
    out = subprocess.run(["pgrep", "-f", f"dist/cli.js serve --socket {d}/"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _metrics(d: Path) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    from client.shared import http_get, parse_metrics

    (meta,) = d.glob("*.json")
    return parse_metrics(http_get(d / f"{meta.stem}.http.sock", "/metrics"))


def _child(paths: list[str], name: str, go: Path, stderr: Any = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SHARED_CHILD, json.dumps(paths), name, json.dumps(kwargs), str(go)],
                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=os.environ.copy())


def _event(proc: subprocess.Popen, want: str) -> dict:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            ev = json.loads(line)
            if ev["event"] == want:
                return ev
    raise AssertionError(f"child exited ({proc.wait()}) before {want!r}")


def test_two_processes_share_one_sidecar_and_its_batches(model_h, dataset, runtime_dir: Path, tmp_path: Path) -> None:
    """Two FiftyOne processes started together: one sidecar (the flock makes the second wait and
    connect), both datasets labelled, and batches holding images of both processes' calls."""
    paths = [s.filepath for s in dataset] * 2
    go = tmp_path / "go"
    # 224x224: 196 patch tokens, so a CPU batch (1024 tokens) has room for 5 images; calls of 2.
    size = [224, 224]
    a, b = _child(paths, "shared-a", go, image_size=size), _child(paths, "shared-b", go, image_size=size)
    try:
        pa, pb = _event(a, "loaded")["pid"], _event(b, "loaded")["pid"]
        assert pa == pb and _sidecars_in(runtime_dir) == {pa}, "one sidecar for both processes"
        assert _metrics(runtime_dir)["radio_grpc_open_calls"] == 2, "each process holds a lease"
        go.touch()
        da, db = _event(a, "done"), _event(b, "done")
        assert (da["labelled"], db["labelled"]) == (len(paths), len(paths))
        assert a.wait(60) == 0 and b.wait(60) == 0
        m = _metrics(runtime_dir)
        batches, images = m["radio_batch_size_count"], m["radio_batch_size_sum"]
        mixed = batches - sum(v for k, v in m.items() if k.startswith("radio_batch_calls_bucket{") and 'le="1"' in k)
        print(f"two processes, one sidecar: {int(images)} images in {int(batches)} batches "
              f"(mean {images / batches:.2f}; each process sends 2 a call), {int(mixed)} batches mixing calls")
        assert images == 2 * len(paths)
        # Each process has one call open at a time: a batch of images from two calls holds both processes' images.
        assert mixed >= 1, "batches hold images of both processes"
        assert _running(pa), "the sidecar outlives both processes"
    finally:
        for p in (a, b):
            p.kill()


def test_two_processes_compiling_the_same_new_graph_at_once(model_h, dataset, runtime_dir: Path, tmp_path: Path) -> None:
    """A notebook and the App server loading a variant never compiled before, together: one compiles
    (a lock in the zoo's folder), the other waits and uses it; both label everything."""
    import shutil

    graphs = Path(fo.config.model_zoo_dir) / "nv_labs" / "c-radio_v4" / "c-radio_v4-h"
    assert (graphs / "fp32" / "metadata.json").exists(), graphs
    shutil.rmtree(graphs / "int8", ignore_errors=True)
    paths = [s.filepath for s in dataset][:4]
    go = tmp_path / "go"
    go.touch()
    logs = [tmp_path / f"{k}.log" for k in "ab"]
    a, b = (_child(paths, f"int8-{k}", go, open(log, "w"), quantize=True, device="cpu") for k, log in zip("ab", logs))
    try:
        da, db = _event(a, "done"), _event(b, "done")
        assert (da["labelled"], db["labelled"]) == (len(paths), len(paths))
        assert a.wait(60) == 0 and b.wait(60) == 0
        assert (graphs / "int8" / "metadata.json").exists()
        compiles = sum(log.read_text().count("compiling nv_labs/c-radio_v4-h (int8)") for log in logs)
        assert compiles == 1, f"the int8 graph was compiled {compiles} times"
    finally:
        for p in (a, b):
            p.kill()


SETUP_CHILD = """
import os, sys, time
import fiftyone.zoo as foz
while not os.path.exists(sys.argv[1]):
    time.sleep(0.005)
foz.load_zoo_model("nv_labs/c-radio_v4-so400m", cache=False, device="cpu").close()
"""


def test_two_processes_setting_up_the_same_model_at_once_compile_it_once(registered, runtime_dir: Path,
                                                                         tmp_path: Path) -> None:
    """Two processes loading a model never set up, together: one compiles its fp32 graph, the other
    waits and finds it done. The marker that says so was written after the lock was released, so the
    waiter, woken first, mostly compiled it a second time (over the graph the first was loading). A
    race: a few rounds, each of which compiled twice more often than not."""
    import shutil

    marker = Path(foz.download_zoo_model(SO)[1])
    for round_ in range(3):
        marker.unlink()
        shutil.rmtree(marker.with_suffix("") / "fp32")
        go = tmp_path / f"go{round_}"
        logs = [tmp_path / f"{round_}{k}.log" for k in "ab"]
        children = [subprocess.Popen([sys.executable, "-c", SETUP_CHILD, str(go)], stderr=open(log, "w"), env=os.environ.copy())
                    for log in logs]
        try:
            time.sleep(3)  # both import fiftyone, then start together
            go.touch()
            assert [c.wait(300) for c in children] == [0, 0], [log.read_text()[-2000:] for log in logs]
        finally:
            for c in children:
                c.kill()
        compiles = sum(log.read_text().count(f"compiling {SO} (fp32)") for log in logs)
        assert compiles == 1, f"round {round_}: the fp32 graph was compiled {compiles} times"
    assert marker.is_file() and (marker.with_suffix("") / "fp32" / "metadata.json").exists()


def test_killed_client_leaves_the_shared_sidecar_up_which_exits_when_idle(model_h, dataset, runtime_dir: Path,
                                                                         tmp_path: Path) -> None:
    """One client SIGKILLed mid-run: the other finishes on the same sidecar. With no client left, the
    sidecar exits after its idle timeout (not before), and its sockets are gone."""
    idle = 4
    paths = [s.filepath for s in dataset] * 4
    go = tmp_path / "go"
    a, b = _child(paths, "kill-a", go, idle_timeout_s=idle), _child(paths, "kill-b", go, idle_timeout_s=idle)
    try:
        pid = _event(a, "loaded")["pid"]
        assert _event(b, "loaded")["pid"] == pid
        go.touch()
        _event(a, "started")
        time.sleep(1.0)
        a.kill()
        a.wait(30)
        done = _event(b, "done")
        assert done["labelled"] == len(paths) and done["pid"] == pid, "the other client finished on the same sidecar"
        assert b.wait(60) == 0
        left = time.monotonic()
        assert _running(pid), "a killed client did not take the sidecar down"
        assert _wait_gone(pid, idle + 30), "exits once idle"
        assert time.monotonic() - left >= idle - 1.0, "not before its idle timeout"
        assert not list(runtime_dir.glob("*.sock")), "its sockets are removed"
    finally:
        for p in (a, b):
            p.kill()


def test_stale_socket_and_lock_are_cleaned(registered, dataset, runtime_dir: Path) -> None:
    """A SIGKILLed sidecar leaves its socket and pid file, and a SIGKILLed starter its lock file: the
    next model cleans them and starts a fresh sidecar."""
    import signal

    model = foz.load_zoo_model(H, cache=False)
    handle = model._sidecar
    pid, paths = handle.pid, handle.paths
    model.close()
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid)
    assert paths.socket.exists() and paths.meta.exists(), "left behind"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)", str(paths.lock)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(10)
    model = foz.load_zoo_model(H, cache=False)
    try:
        assert model._sidecar.pid != pid and _running(model._sidecar.pid)
        assert model.embed(dataset.first().filepath) is not None
    finally:
        model.close()


def test_a_sidecar_of_another_key_is_never_used(registered, dataset, runtime_dir: Path) -> None:
    """Other settings (threads) make another key, so another sidecar; and a live sidecar on our
    socket whose Info reports another key is refused, not used."""
    import signal

    one = foz.load_zoo_model(H, cache=False)
    two = foz.load_zoo_model(H, cache=False, threads=1)
    try:
        assert one._sidecar.paths.key != two._sidecar.paths.key
        assert one._sidecar.pid != two._sidecar.pid and len(_sidecars_in(runtime_dir)) == 2
        paths, graph = one._sidecar.paths, one._sidecar.spec.graphs[0]
    finally:
        one.close()
        two.close()
    from conftest import stop_shared_sidecars

    stop_shared_sidecars(str(runtime_dir))
    assert not _sidecars_in(runtime_dir)
    impostor = subprocess.Popen([*sidecar_command(), "serve", "--socket", str(paths.socket), "--graph", f"{graph[0]}={graph[1]}",
                                 "--instance-key", "not-" + paths.key],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert impostor.stdout is not None and json.loads(impostor.stdout.readline())["event"] == "ready"
        with pytest.raises(Exception, match="reports key .* refusing to use it"):
            foz.load_zoo_model(H, cache=False)
    finally:
        impostor.send_signal(signal.SIGTERM)
        impostor.wait(30)
