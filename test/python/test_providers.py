"""The zoo's device option against the sidecar's real provider probe (`radio-sidecar providers`, run
as the zoo runs it), and the graph precision that follows from the choice and the options. No
FiftyOne here; test_fiftyone_zoo.py checks the same through foz.load_zoo_model."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from prerequisites import SWIFTSHADER_ICD, unavailable  # noqa: E402

from client import providers  # noqa: E402
from client.options import parse_options  # noqa: E402
from client.sidecar import cli_path, node_executable  # noqa: E402

H = "nv_labs/c-radio_v4-h"
NO_VULKAN = "/nonexistent/radio-test-no-vulkan-driver.json"


def _probe(requested: str) -> providers.ProviderChoice:
    cli = cli_path()
    if not cli.exists():
        raise RuntimeError(f"{cli} is missing: run `npm run build` first")
    return providers.probe(requested, node_executable(), cli)


@pytest.fixture
def swiftshader(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path(SWIFTSHADER_ICD).exists():
        unavailable(f"{SWIFTSHADER_ICD} is missing: install Debian's chromium and libvulkan1 (scripts/setup.sh does) "
                    "or set RADIO_TEST_SWIFTSHADER_ICD")
    monkeypatch.setenv("VK_ICD_FILENAMES", SWIFTSHADER_ICD)


@pytest.mark.parametrize("device,request_", [(None, "auto"), ("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"),
                                             ("cuda:1", "cuda"), ("webgpu", "webgpu")])
def test_device_to_provider_request(device, request_) -> None:
    assert providers.provider_request(device) == request_


def test_cpu_is_not_probed() -> None:
    choice = providers.probe("cpu", "/nonexistent/node", Path("/nonexistent/cli.js"))  # would fail if it ran anything
    assert (choice.provider, choice.precision, choice.not_taken) == ("cpu", "fp32", ())


def test_auto_without_a_vulkan_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_ICD_FILENAMES", NO_VULKAN)
    choice = _probe("auto")
    assert [p["provider"] for p in choice.providers] == ["cuda", "webgpu", "cpu"]
    if choice.provider == "cuda":
        pytest.skip("CUDA is usable here: auto takes it")
    assert (choice.provider, choice.precision) == ("cpu", "fp32")
    assert choice.not_taken[0].startswith("cuda: ")
    assert choice.not_taken[1].startswith("webgpu: no Vulkan driver")


def test_auto_passes_over_swiftshader_and_explicit_webgpu_takes_it(swiftshader: None) -> None:
    auto = _probe("auto")
    if auto.provider == "cuda":
        pytest.skip("CUDA is usable here: auto takes it")
    assert auto.provider == "cpu"
    assert auto.not_taken[1].startswith("webgpu: the only Vulkan driver is a software one")
    webgpu = _probe("webgpu")
    assert (webgpu.provider, webgpu.precision) == ("webgpu", "fp32")  # SwiftShader has no shader-f16
    status = webgpu.providers[0]
    assert status["usable"] and status["software"] and not status["fp16"]


def test_explicit_webgpu_without_a_driver_raises_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_ICD_FILENAMES", NO_VULKAN)
    with pytest.raises(providers.ProviderUnavailable, match="^the webgpu execution provider was asked for but cannot be "
                                                            "used: no Vulkan driver"):
        _probe("webgpu")


def test_explicit_cuda_without_cuda_raises_with_the_reason() -> None:
    try:
        choice = _probe("cuda")
    except providers.ProviderUnavailable as err:
        assert "the cuda execution provider was asked for but cannot be used: " in str(err)
        assert "never falls back" in str(err)
        return
    assert (choice.provider, choice.precision) == ("cuda", "fp16")


CPU = providers.ProviderChoice("auto", "cpu", "fp32")
CUDA = providers.ProviderChoice("auto", "cuda", "fp16")
WEBGPU_NO_F16 = providers.ProviderChoice("webgpu", "webgpu", "fp32")


@pytest.mark.parametrize("choice,kwargs,precision,warns", [
    (CPU, {}, "fp32", None),
    (CPU, {"use_mixed_precision": True}, "fp32", "slower than fp32.*running the fp32 graph.*quantize=True"),
    (CPU, {"quantize": True}, "int8", None),
    (CUDA, {}, "fp16", None),
    (CUDA, {"use_mixed_precision": False}, "fp32", None),
    (CUDA, {"use_mixed_precision": True}, "fp16", None),
    (WEBGPU_NO_F16, {}, "fp32", None),
    (WEBGPU_NO_F16, {"use_mixed_precision": True}, "fp32", "no shader-f16"),
])
def test_graph_precision(choice, kwargs, precision, warns) -> None:
    got, warning = providers.graph_precision(choice, parse_options(H, kwargs), None)
    assert got == precision
    if warns is None:
        assert warning is None
    else:
        assert warning is not None and re.search(warns, warning), warning


def test_quantize_refused_when_auto_chose_a_gpu() -> None:
    with pytest.raises(ValueError, match="quantize=True makes an int8 graph for the CPU, but this host has a GPU and "
                                         "device=None chose cuda; pass device='cpu'"):
        providers.graph_precision(CUDA, parse_options(H, {"quantize": True}), None)


@pytest.mark.parametrize("device,visible,want", [
    ("cuda:1", None, "1"),            # nothing set: CUDA's own numbering
    ("cuda:1", "2,3", "3"),           # the N-th GPU this process sees
    ("cuda:0", "GPU-1b2c, GPU-9f8e", "GPU-1b2c"),
    ("cuda", "2,3", None),            # no index: the environment as it is
    ("auto", None, None),
    (None, "0", None),
])
def test_cuda_n_names_the_nth_visible_gpu_for_the_sidecar(device, visible, want) -> None:
    base = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert providers.device_env(device, base) == ({} if want is None else {"CUDA_VISIBLE_DEVICES": want})


def test_cuda_n_past_the_visible_gpus_raises_saying_which_are() -> None:
    with pytest.raises(ValueError, match=r"device='cuda:2': CUDA_VISIBLE_DEVICES='4,5' lets this process see GPUs "
                                         r"cuda:0\.\.cuda:1; use one of those"):
        providers.device_env("cuda:2", {"CUDA_VISIBLE_DEVICES": "4,5"})
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES='' lets this process see no GPU"):
        providers.device_env("cuda:0", {"CUDA_VISIBLE_DEVICES": ""})


def test_the_sidecar_gets_the_environment_of_its_spec(tmp_path: Path) -> None:
    from sidecar_cli import REPO, compile_graph, make_checkpoint

    from client import shared
    from client.sidecar import LocalSidecar, SidecarSpec, _sidecar_env

    graph = compile_graph(make_checkpoint(tmp_path / "ckpt", "tiny"), tmp_path / "graph")
    spec = SidecarSpec(graphs=(("tiny", str(graph)),), env=(("CUDA_VISIBLE_DEVICES", "5"),))
    sc = LocalSidecar(spec)
    sc.start()
    try:
        assert sc.process is not None
        environ = Path(f"/proc/{sc.process.pid}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=5" in environ
    finally:
        sc.stop()
    # Shared sidecars for two GPUs are two sidecars: the environment is part of the key.
    other = SidecarSpec(graphs=spec.graphs, env=(("CUDA_VISIBLE_DEVICES", "6"),))
    keys = {shared.sidecar_key(shared.key_material(s, "node", REPO, _sidecar_env(s))) for s in (spec, other)}
    assert len(keys) == 2
    # And two handles in this process: the registry's key covers the environment too.
    from client.sidecar import registry
    assert registry._key(spec) != registry._key(other)
    assert registry._key(spec) == registry._key(SidecarSpec(graphs=spec.graphs, env=spec.env, idle_timeout_s=7))
