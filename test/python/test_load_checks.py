"""load_model fails, with what to fix, when the model could not work: a wrong or missing token, an
unreachable server, a model or embedding space the server does not serve, an image_size the served
model does not take (one Info call at load, local and remote); and when FiftyOne no longer has the
image reader the model swaps out while in use (fiftyone.core.models.foui), which close() puts back.

Real sidecars (the built CLI) on a tiny compiled graph, real FiftyOne; the zoo package imported as
test_reliability.py does."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.core.models as fom
import numpy as np
import pytest
from PIL import Image
from test_reliability import MODEL, radio, sidecar  # noqa: F401 — registers the radio_zoo_under_test package: first

# isort: split
from radio_zoo_under_test import zoo  # noqa: E402
from radio_zoo_under_test.client.grpc_client import SidecarAuthError, SidecarUnavailable  # noqa: E402
from radio_zoo_under_test.client.options import parse_options  # noqa: E402
from sidecar_cli import compile_graph, make_checkpoint

TOKEN = "load-check-token-77"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("graphs")
    ckpt = make_checkpoint(root / "ckpt", "tiny")
    return {"fp32": compile_graph(ckpt, root / "fp32"), "w4": compile_graph(ckpt, root / "w4", "--window-size", "4")}


@pytest.fixture(scope="module")
def server(graphs: dict[str, Path]) -> Any:
    """A token-protected TCP sidecar serving the tiny C-RADIOv4-H-shaped graph as 'tiny'."""
    with sidecar(graphs["fp32"], "--port", "0", env={"RADIO_TOKEN": TOKEN}) as sc:
        yield f"127.0.0.1:{sc['grpcPort']}"


def load(server: str, **options: Any) -> Any:
    """The zoo's own load_model with server= (what foz.load_zoo_model runs for remote sidecars)."""
    return radio.load_model(options.pop("model", MODEL), "/nonexistent/unused-for-remote.json", server=server, **options)


def test_right_token_loads_and_names_the_served_model(server: str, tmp_path: Path) -> None:
    model = load(server, token=TOKEN)
    try:
        assert model.graph_name == "tiny" and model.served.variant == "c-radio_v4-h"
        # What the server chose, as a local model says it (they stayed empty for remote models).
        info = model.info()
        assert (model.provider, model.precision) == (info.provider, "fp32") and model.provider
        assert model.provider_notes == tuple(info.provider_not_taken)
        png = tmp_path / "a.png"
        Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(png)
        assert model.embed(str(png)).shape == (128,)
    finally:
        model.close()


def test_wrong_token_fails_at_load_saying_so(server: str, tmp_path: Path) -> None:
    # What a new user hit: load_zoo_model(..., token="wrong") loaded, and compute_embeddings then labelled
    # nothing with a warning per batch. Now load_model raises.
    with pytest.raises(SidecarAuthError, match=r"UNAUTHENTICATED.*the token sent was refused: pass the server's token"):
        load(server, token="wrong")
    with pytest.raises(SidecarAuthError, match=r"the server wants a token: pass token=\.\.\."):
        load(server)


def test_unreachable_server_fails_at_load_with_what_to_check() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SidecarUnavailable, match=rf"no sidecar answers at 127\.0\.0\.1:{port}.*address and port"):
        load(f"127.0.0.1:{port}", token=TOKEN)


def test_model_or_space_not_served_fails_at_load_listing_what_is(server: str) -> None:
    with pytest.raises(ValueError, match=r"does not serve nv_labs/c-radio_v4-so400m \(c-radio_v4-so400m\); it serves "
                                         r"'tiny' \(c-radio_v4-h, fp32; spaces: backbone\)\. load 'nv_labs/c-radio_v4-h'"):
        load(server, token=TOKEN, model="nv_labs/c-radio_v4-so400m")
    with pytest.raises(ValueError, match=r"embedding_space='dinov3' needs the dino_v3_7b adaptor.*spaces: backbone"):
        load(server, token=TOKEN, embedding_space="dinov3")
    with pytest.raises(ValueError, match=r"needs the siglip2-g adaptor and its text tower"):
        load(server, token=TOKEN, classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"vitdet_window_size=8: .* no ViTDet window of 8 patches"):
        load(server, token=TOKEN, vitdet_window_size=8)


def test_revision_picks_the_served_graph_compiled_from_it_or_fails_at_load(graphs: dict[str, Path], tmp_path: Path) -> None:
    # revision= used to be ignored with server=: the model ran on whatever commit the sidecar served.
    # 'pinned' is the same graph, recorded as compiled from the Hub at a commit; 'tiny' from a local folder.
    pinned = tmp_path / "pinned"
    shutil.copytree(graphs["fp32"], pinned)
    meta = json.loads((pinned / "metadata.json").read_text())
    meta["source"] = {"repo": "nvidia/C-RADIOv4-H", "revision": "0123456789abcdef0123456789abcdef01234567",
                      "dir": "/hf-cache/models--nvidia--C-RADIOv4-H/snapshots/0123456789abcdef"}
    (pinned / "metadata.json").write_text(json.dumps(meta))
    with sidecar(graphs["fp32"], "--graph", f"pinned={pinned}", "--port", "0") as sc:
        where = f"127.0.0.1:{sc['grpcPort']}"
        for asked in ("0123456789abcdef0123456789abcdef01234567", "0123456"):
            model = load(where, revision=asked)
            try:
                assert model.graph_name == "pinned"
            finally:
                model.close()
        with pytest.raises(ValueError, match=r"revision='fedcba9': the sidecar at 127\.0\.0\.1:\d+ serves "
                                             r"nv_labs/c-radio_v4-h compiled from other commits: 'pinned' from "
                                             r"nvidia/C-RADIOv4-H at 0123456789abcdef.*, 'tiny' from \(a local folder\) "
                                             r"at \(unknown commit\)\. Serve a graph compiled with --revision fedcba9"):
            load(where, revision="fedcba9")
        with pytest.raises(ValueError, match=r"revision='012345'"):  # too short to be a commit's short form
            load(where, revision="012345")
        model = load(where)
        try:
            assert model.graph_name == "tiny"  # no revision asked: the server's default graph
        finally:
            model.close()


def test_cuda_n_leaves_this_process_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # device="cuda:N" used to set CUDA_VISIBLE_DEVICES in the user's process (torch, initialised later,
    # then saw that GPU alone), and only if unset (so a second model's cuda:M ran on the first's GPU).
    # Now only the probe and the sidecar get it (test_providers.py). A node that is not there stops
    # load_model right after that point, before it would build anything in this tree.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("RADIO_NODE", "/nonexistent/radio-test/node")
    with pytest.raises(RuntimeError, match=r"RADIO_NODE"):
        radio.load_model(MODEL, "/nonexistent/unused.json", device="cuda:1")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_bad_image_size_fails_at_load_listing_valid_sizes(server: str) -> None:
    with pytest.raises(ValueError, match=r"image_size=\(500, 500\) is not a size c-radio_v4-h as served .* multiples "
                                         r"of 16 from 16 to 2048; the nearest is \(496, 496\)"):
        load(server, token=TOKEN, image_size=(500, 500))
    with pytest.raises(ValueError, match=r"multiples of 16 from 16 to 2048; the nearest is \(2048, 512\)"):
        load(server, token=TOKEN, image_size="4096x512")
    for ok in ((512, 768), "native", 300, None):
        load(server, token=TOKEN, image_size=ok).close()


def test_bad_image_size_for_a_vitdet_window_fails_at_load_locally(graphs: dict[str, Path]) -> None:
    # Window 4 (patches of 16): sides must be multiples of 64. (16, 16) passed the option check and
    # used to fail at the first batch.
    def local(**options: Any) -> Any:
        return zoo.make_local_model(MODEL, parse_options(MODEL, {"vitdet_window_size": 4, **options}),
                                    {"w4": graphs["w4"]}, "w4", "cpu")

    with pytest.raises(ValueError, match=r"image_size=\(16, 16\) .*ViTDet window 4 → steps of 64.* multiples of 64 "
                                         r"from 64 to 2048; the nearest is \(64, 64\)"):
        local(image_size=(16, 16))
    with pytest.raises(ValueError, match=r"a longest side of 32 is below the resolution step"):
        local(image_size=32)
    model = local(image_size=(64, 128))
    try:
        assert model.served.window_size == 4 and model.served.resolution_step == 64
        out = model.embed(np.zeros((40, 50, 3), np.uint8))
        assert out.shape == (128,)
    finally:
        model.close()


# -- the image reader FiftyOne's batch loop calls -------------------------------------------------------


def test_load_fails_loudly_when_fiftyone_has_no_image_reader_to_swap(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(fom, "foui")
    with pytest.raises(RuntimeError, match=r"fiftyone.core.models has no `foui`.*Install the FiftyOne this zoo source "
                                           r"was made for"):
        load(server, token=TOKEN)


def test_load_fails_loudly_when_the_readers_signature_changed(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed:
        @staticmethod
        def read(path: str, alpha: bool = False) -> None:  # not (path_or_url, include_alpha, flag)
            return None

    monkeypatch.setattr(fom, "foui", Renamed())
    with pytest.raises(RuntimeError, match=r"foui.read takes \('path', 'alpha'\), not \('path_or_url', "
                                           r"'include_alpha', 'flag'\)"):
        load(server, token=TOKEN)


def test_image_reader_swapped_in_use_restored_on_exit_and_close(server: str, tmp_path: Path) -> None:
    real = fom.foui
    png = tmp_path / "b.png"
    Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).save(png)
    model = load(server, token=TOKEN)
    try:
        assert fom.foui is real, "loading swaps nothing"
        with model:
            assert isinstance(fom.foui, zoo._LazyImageReader)
            assert fom.foui.read(str(png)) == str(png)  # the path, not pixels
        assert fom.foui is real, "restored on __exit__"
        model.__enter__()
        assert fom.foui is not real
        model.close()
        assert fom.foui is real, "restored on close()"
        # And FiftyOne's own loop still works with it (the batch path, which reads through foui).
        ds = fo.Dataset()
        try:
            ds.add_sample(fo.Sample(filepath=str(png)))
            again = load(server, token=TOKEN)
            ds.compute_embeddings(again, embeddings_field="e", batch_size=2)
            again.close()
            assert ds.values("e")[0] is not None and fom.foui is real
        finally:
            ds.delete()
    finally:
        model.close()
        assert fom.foui is real


def test_image_reader_stays_swapped_while_any_run_is_in(server: str, tmp_path: Path) -> None:
    """Runs at once in threads (the App server, an executor): FiftyOne's reader stays swapped while any
    run is in, whatever order they leave in, and is the real one once all are out. The first run to
    leave used to put the real reader back under the others (their next batches were decoded in Python
    and sent as pixels), and two models leaving in the order they came in left the lazy one for good."""
    import threading

    real = fom.foui
    pngs = []
    for i in range(2):
        pngs.append(tmp_path / f"t{i}.png")
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(pngs[-1])
    ds = fo.Dataset()
    a, b = load(server, token=TOKEN), load(server, token=TOKEN)

    def overlapping(p: Any, q: Any) -> list[type]:
        """p's run (a thread) comes in, then q's (here); p's leaves while q's is still in its first batch."""
        p_in, q_in, p_out = threading.Event(), threading.Event(), threading.Event()
        got: list[type] = []
        calls = {"p": 0, "q": 0}
        main = threading.current_thread()
        originals = {id(m): (m, m.embed_all) for m in (p, q)}

        def wrap(real_embed_all: Any) -> Any:
            def embed_all(args: Any) -> Any:
                got.append(type(args[0]))
                who = "q" if threading.current_thread() is main else "p"
                calls[who] += 1
                if calls[who] == 1:
                    (p_in if who == "p" else q_in).set()
                    (q_in if who == "p" else p_out).wait(30)
                return real_embed_all(args)
            return embed_all

        other = ds.clone()

        def p_run() -> None:
            try:
                other.compute_embeddings(p, embeddings_field="e", batch_size=1)
            finally:
                p_out.set()

        t = threading.Thread(target=p_run)
        try:
            for m, f in originals.values():
                m.embed_all = wrap(f)
            t.start()
            assert p_in.wait(30)
            ds.compute_embeddings(q, embeddings_field="e", batch_size=1)
        finally:
            p_out.set()
            t.join(60)
            other.delete()
            for m, f in originals.values():
                m.embed_all = f
        assert calls == {"p": 2, "q": 2}
        return got

    try:
        ds.add_samples([fo.Sample(filepath=str(p)) for p in pngs])
        for p, q in ((a, a), (a, b)):
            got = overlapping(p, q)
            assert all(issubclass(t, str) for t in got), f"a batch got decoded pixels: {got}"
            assert fom.foui is real, "the real reader is back once every run is out"
    finally:
        ds.delete()
        a.close()
        b.close()
        fom.foui = real


def test_a_closed_model_says_so(server: str, graphs: dict[str, Path], tmp_path: Path) -> None:
    """A model used after close() (FiftyOne's model cache hands the same closed model back to
    foz.load_zoo_model while it is referenced) raises, saying it was closed and what to do, before
    the first batch. It used to fail each batch with a bare AssertionError, which skip_failures=True
    turned into a warning per batch with an empty message and None for every sample."""
    png = tmp_path / "c.png"
    Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).save(png)
    local = zoo.make_local_model(MODEL, parse_options(MODEL, {}), {"fp32": graphs["fp32"]}, "fp32", "cpu")
    ds = fo.Dataset()
    try:
        ds.add_sample(fo.Sample(filepath=str(png)))
        for model in (load(server, token=TOKEN), local):
            model.close()
            with pytest.raises(RuntimeError, match=r"was closed \(model\.close\(\)\).*cache=False"):
                ds.compute_embeddings(model, embeddings_field="e")
            with pytest.raises(RuntimeError, match=r"was closed"):
                model.embed(str(png))
            assert fom.foui.read(str(png)).shape == (32, 32, 3)
    finally:
        ds.delete()


def test_patch_embeddings_get_the_pixels_they_crop(graphs: dict[str, Path], tmp_path: Path) -> None:
    """compute_patch_embeddings crops each image it reads through the swapped reader
    (fiftyone.utils.patches.extract_patch): it gets pixels, and each patch's embedding is the crop's.
    It used to get the path, and every sample failed."""
    import fiftyone.utils.patches as foup

    model = zoo.make_local_model(MODEL, parse_options(MODEL, {}), {"fp32": graphs["fp32"]}, "fp32", "cpu")
    ds = fo.Dataset()
    try:
        rng = np.random.default_rng(5)
        boxes = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.5]]
        for i in range(2):
            png = tmp_path / f"p{i}.png"
            Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(png)
            ds.add_sample(fo.Sample(filepath=str(png), gt=fo.Detections(
                detections=[fo.Detection(label="x", bounding_box=b) for b in boxes])))
        got = ds.compute_patch_embeddings(model, "gt", skip_failures=False)
        for sample in ds:
            pixels = np.asarray(Image.open(sample.filepath).convert("RGB"))
            crops = [foup.extract_patch(pixels, d) for d in sample.gt.detections]
            np.testing.assert_array_equal(got[sample.id], np.stack(model.embed_all(crops)))
        assert fom.foui.read(ds.first().filepath).shape == (64, 96, 3), "the real reader is back"
    finally:
        ds.delete()
        model.close()


def test_use_external_preprocessor_is_a_checked_no_op() -> None:
    # Accepted as the seed README shows it, still checked to be a bool, and no graph variant of its own.
    plain = radio._variant(parse_options(MODEL, {}), "fp32")
    assert radio._variant(parse_options(MODEL, {"use_external_preprocessor": True}), "fp32") == plain == ("fp32", [])
    with pytest.raises(ValueError, match="use_external_preprocessor='yes' is not valid; use one of True, False"):
        parse_options(MODEL, {"use_external_preprocessor": "yes"})


def test_spatial_models_on_a_gpu_compile_the_heatmap_head() -> None:
    # The heatmap PCA's heavy half joins the graph only where a GPU runs it, and only for the
    # backbone's features (adaptor spaces' heatmaps keep the CPU path).
    spatial = parse_options(MODEL, {"output_type": "spatial"})
    assert radio._variant(spatial, "fp16", "cuda") == ("fp16-heatmap", ["--precision", "fp16", "--heatmap"])
    assert radio._variant(spatial, "fp32", "webgpu") == ("fp32-heatmap", ["--heatmap"])
    assert radio._variant(spatial, "fp32", "cpu") == ("fp32", [])
    assert radio._variant(parse_options(MODEL, {}), "fp16", "cuda") == ("fp16", ["--precision", "fp16"])
    dino = radio._variant(parse_options(MODEL, {"output_type": "spatial", "embedding_space": "dinov3"}), "fp16", "cuda")
    assert "--heatmap" not in dino[1], dino


def test_the_app_form_predicts_heatmaps_untouched_and_zero_shot_classes_when_asked(server: str, tmp_path: Path) -> None:
    """The @voxel51/zoo operator shows this form on its Predictions tab only and passes the parsed
    values to load_zoo_model, then apply_model. Untouched, the form used to load a summary model,
    which cannot predict (an error per batch); zero-shot could not be asked for at all."""
    from types import SimpleNamespace

    from radio_zoo_under_test.client.options import RadioOptions

    def form(values: dict[str, Any]) -> dict[str, Any]:
        fields = radio.resolve_input(MODEL, SimpleNamespace(params={"remote_params": values})).type.properties
        return {name: prop.default for name, prop in fields.items()}

    heatmaps = form({})
    assert heatmaps["prediction"] == "heatmaps" and "classes" not in heatmaps
    for name in ("heatmap_mode", "apply_smoothing", "smoothing_sigma", "quantize"):
        assert heatmaps[name] == getattr(RadioOptions, name), name
    radio.parse_parameters(MODEL, None, heatmaps)
    assert heatmaps["output_type"] == "spatial" and "prediction" not in heatmaps
    zero_shot = form({"prediction": "zero-shot"})
    assert zero_shot["text_prompt"] == RadioOptions.text_prompt and "heatmap_mode" not in zero_shot
    zero_shot.update(prediction="zero-shot", classes=["cat", "dog"])
    radio.parse_parameters(MODEL, None, zero_shot)
    assert (zero_shot["output_type"], zero_shot["classes"]) == ("summary", ["cat", "dog"])
    with pytest.raises(ValueError, match=r"prediction='boxes' is not valid; use one of 'heatmaps', 'zero-shot'"):
        radio.parse_parameters(MODEL, None, {"prediction": "boxes"})
    # What the operator then does with the untouched form: the model it loads predicts.
    png = tmp_path / "a.png"
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(png)
    model = load(server, token=TOKEN, **heatmaps)
    try:
        assert isinstance(model.predict(str(png)), fo.Heatmap)
    finally:
        model.close()
