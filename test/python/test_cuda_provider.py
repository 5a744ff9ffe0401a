"""The CUDA provider install (client/cuda_provider.py, ort_gpu_wheel.py, provider_files.py, gpu_libs.py)
without downloads: small real wheels (zip files laid out as onnxruntime-gpu's) and real empty .so
files laid out as the nvidia-* wheels lay them out in site-packages. The download itself and the
CUDA session are in test_cuda_provider_pypi.py (opt-in)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from client import cuda_provider  # noqa: E402
from client.gpu_libs import CUDA_LIBRARIES, cuda_library_dirs, library_env, missing_libraries, pip_install_hint, unresolved_libraries  # noqa: E402
from client.provider_files import CUDA, NODE_ARCH, RECORD_FILE, SHARED, CudaProviderError, VersionMismatchError, find_ort_node, inspect, read_record  # noqa: E402
from client.sidecar import LocalSidecar, SidecarSpec  # noqa: E402

MACHINE = platform.machine()
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or MACHINE not in NODE_ARCH,
                                reason="the CUDA provider routes are for Linux x86_64/aarch64")
VERSION = "1.30.0"


def provider_bytes(version: str) -> bytes:
    # What the checks read, laid out as in the real library: an ELF64 header whose section header table
    # ends the file, and one NUL-delimited x.y.z string (a fifth of the way into the real one).
    body = os.urandom(64).replace(b"\x00", b"\x01") + f"\x00{version}\x00".encode() + b"cudaSetDevice"
    header = b"\x7fELF\x02\x01\x01" + bytes(33) + struct.pack("<Q", 64 + len(body)) + bytes(10) + struct.pack("<HHH", 64, 1, 0)
    return header + body + bytes(64)


def make_wheel(folder: Path, version: str = VERSION, machine: str = MACHINE, *, damage: bool = False) -> Path:
    """A wheel laid out as onnxruntime-gpu's: METADATA, WHEEL tags, RECORD with sha256s, the provider files."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"onnxruntime_gpu-{version}.dist-info"
    files = {
        f"onnxruntime/capi/{CUDA}": provider_bytes(version),
        f"onnxruntime/capi/{SHARED}": b"\x7fELF shared bridge",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_28_{machine}\n".encode(),
    }
    rows = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data + (b"!" if damage and name.endswith(CUDA) else b"")).digest())
        rows.append(f"{name},sha256={digest.decode().rstrip('=')},{len(data)}")
    rows.append(f"{dist}/RECORD,,")
    wheel = folder / f"onnxruntime_gpu-{version}-cp311-cp311-manylinux_2_28_{machine}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/RECORD", "\n".join(rows) + "\n")
    return wheel


def make_source(root: Path, version: str = VERSION) -> Path:
    """A folder with node_modules/onnxruntime-node as npm installs it (package.json + binary folder)."""
    pkg = root / "node_modules" / "onnxruntime-node"
    bin_dir = pkg / "bin" / "napi-v6" / "linux" / NODE_ARCH[MACHINE]
    bin_dir.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "onnxruntime-node", "version": version}))
    (bin_dir / "libonnxruntime.so.1").write_bytes(b"\x7fELF")
    return root


def bin_dir(source: Path) -> Path:
    return find_ort_node(source).bin_dir


def fake_site_packages(root: Path, libraries: tuple[str, ...]) -> Path:
    """site-packages as the CUDA 13 wheels lay it out: nvidia/cu13/lib for the toolkit's libraries,
    nvidia/cudnn/lib for cuDNN; each a real (empty) file."""
    site = root / "site-packages"
    for name in libraries:
        lib = site / "nvidia" / ("cudnn" if name.startswith("libcudnn") else "cu13") / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        (lib / name).write_bytes(b"")
    return site


def fake_nvidia_smi(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n")
    exe.chmod(0o755)
    return folder


@pytest.fixture(autouse=True)
def _no_asked_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RADIO_CUDA_PROVIDER", "RADIO_ORT_GPU_WHEEL", "RADIO_CUDA_PROVIDER_CACHE"):
        monkeypatch.delenv(key, raising=False)


def test_pypi_route_places_the_wheels_files_and_checks_them(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    wheel = make_wheel(tmp_path / "wheels")
    logs: list[str] = []
    outcome = cuda_provider.install(source, routes=("pypi",), wheel=wheel, log=logs.append)
    assert outcome.route == "pypi"
    with zipfile.ZipFile(wheel) as z:
        for name in (CUDA, SHARED):
            assert (bin_dir(source) / name).read_bytes() == z.read(f"onnxruntime/capi/{name}")
    record = read_record(bin_dir(source))
    assert record is not None and record["onnxruntime"] == VERSION and record["route"] == "pypi"
    assert record["files"][CUDA]["sha256"] == hashlib.sha256((bin_dir(source) / CUDA).read_bytes()).hexdigest()
    assert not list(bin_dir(source).glob(".*.partial"))
    assert inspect(find_ort_node(source)).installed
    # Done once: a second run changes nothing.
    assert cuda_provider.install(source, routes=("pypi",), wheel=wheel, log=logs.append).route == "present"


def test_a_wheel_in_the_cache_is_used_without_a_download(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    cache = tmp_path / "cache"
    make_wheel(cache)
    logs: list[str] = []
    assert cuda_provider.install(source, routes=("pypi",), cache_dir=cache, log=logs.append).route == "pypi"
    assert any("using" in line and str(cache) in line for line in logs)
    assert not any("downloading" in line for line in logs)


def test_a_wheel_of_another_version_is_refused(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    wheel = make_wheel(tmp_path / "wheels", version="1.29.0")
    with pytest.raises(VersionMismatchError, match=r"onnxruntime-gpu 1\.29\.0, but onnxruntime-node here is 1\.30\.0.*"
                                                   r"Use onnxruntime-gpu==1\.30\.0"):
        cuda_provider.install(source, routes=("pypi",), wheel=wheel, log=lambda _: None)
    assert not (bin_dir(source) / CUDA).exists() and not (bin_dir(source) / SHARED).exists()


@pytest.mark.parametrize("found,said", [("1.29.0", "onnxruntime 1.29.0"), (None, "an unknown onnxruntime version")])
def test_provider_files_of_another_version_are_refused(tmp_path: Path, found: str | None, said: str) -> None:
    source = make_source(tmp_path / "src")
    stale = provider_bytes(found) if found else b"\x7fELF no version here"
    (bin_dir(source) / CUDA).write_bytes(stale)
    (bin_dir(source) / SHARED).write_bytes(b"old bridge")
    with pytest.raises(VersionMismatchError) as e:
        cuda_provider.install(source, routes=("pypi",), wheel=make_wheel(tmp_path / "wheels"), log=lambda _: None)
    message = str(e.value)
    assert f"{bin_dir(source) / CUDA} is from {said}" in message and "but onnxruntime-node here is 1.30.0" in message
    assert f"rm {bin_dir(source) / CUDA} {bin_dir(source) / SHARED}" in message and "npm ci" in message
    assert "onnxruntime-gpu==1.30.0" in message and "python -m client.cuda_provider install" in message
    assert (bin_dir(source) / CUDA).read_bytes() == stale  # refused, not overwritten


def test_a_provider_file_cut_short_is_not_taken_as_installed(tmp_path: Path) -> None:
    """onnxruntime-node's install script (route a, and its npm postinstall) copies the CUDA provider in
    place: a kill or a full disk leaves the first part of it, which holds the version string the check
    read (a fifth of the way into the real 272 MB library). That was taken as installed, so never
    replaced, and the sidecar could not load it. Its section header table, at the end, is missing: the
    install puts the whole file there."""
    source = make_source(tmp_path / "src")
    whole = provider_bytes(VERSION)
    (bin_dir(source) / CUDA).write_bytes(whole[: len(whole) * 3 // 4])
    (bin_dir(source) / SHARED).write_bytes(b"\x7fELF shared bridge")
    assert not inspect(find_ort_node(source)).installed
    wheel = make_wheel(tmp_path / "wheels")
    assert cuda_provider.install(source, routes=("pypi",), wheel=wheel, log=lambda _: None).route == "pypi"
    with zipfile.ZipFile(wheel) as z:
        assert (bin_dir(source) / CUDA).read_bytes() == z.read(f"onnxruntime/capi/{CUDA}")
    assert inspect(find_ort_node(source)).installed


def test_a_damaged_wheel_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    with pytest.raises(CudaProviderError, match="does not match the wheel's RECORD.*damaged; delete it"):
        cuda_provider.install(source, routes=("pypi",), wheel=make_wheel(tmp_path / "w", damage=True), log=lambda _: None)
    assert sorted(p.name for p in bin_dir(source).iterdir()) == ["libonnxruntime.so.1"]


def test_a_wheel_for_another_platform_is_refused(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    other = "aarch64" if MACHINE == "x86_64" else "x86_64"
    with pytest.raises(CudaProviderError, match=f"built for manylinux_2_28_{other}, this machine is Linux {MACHINE}"):
        cuda_provider.install(source, routes=("pypi",), wheel=make_wheel(tmp_path / "w", machine=other), log=lambda _: None)


def test_libraries_are_found_where_the_nvidia_wheels_put_them(tmp_path: Path) -> None:
    site = fake_site_packages(tmp_path, CUDA_LIBRARIES + ("libnvrtc.so.13",))
    cu13, cudnn = site / "nvidia" / "cu13" / "lib", site / "nvidia" / "cudnn" / "lib"
    found = cuda_library_dirs([site])
    assert found == {**{n: cu13 for n in CUDA_LIBRARIES if n != "libcudnn.so.9"}, "libcudnn.so.9": cudnn,
                     "libnvrtc.so.13": cu13}
    assert missing_libraries([site]) == []
    # The sidecar's environment: the wheels' folders first, what the user had after, the rest kept.
    env = library_env({"LD_LIBRARY_PATH": "/opt/mine", "HOME": "/home/u"}, [site])
    assert env == {"LD_LIBRARY_PATH": os.pathsep.join([str(cu13), str(cudnn), "/opt/mine"]), "HOME": "/home/u"}
    assert unresolved_libraries({}, [site], system=set()) == []


def test_missing_libraries_are_named_with_the_pip_packages_that_provide_them(tmp_path: Path) -> None:
    site = fake_site_packages(tmp_path, ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"))
    missing = unresolved_libraries({}, [site], system=set())
    assert missing == ["libcurand.so.10", "libcudnn.so.9"]
    assert pip_install_hint(missing) == f"{sys.executable} -m pip install 'nvidia-curand~=10.0' 'nvidia-cudnn-cu13~=9.0'"
    message = cuda_provider.Outcome("pypi", tmp_path, missing).missing_message()
    assert "libcurand.so.10, libcudnn.so.9" in message and "'nvidia-cudnn-cu13~=9.0'" in message
    # A system CUDA (the ldconfig cache) or a folder on the user's LD_LIBRARY_PATH counts as found.
    assert unresolved_libraries({}, [site], system={"libcurand.so.10"}) == ["libcudnn.so.9"]
    own = tmp_path / "own"
    own.mkdir()
    (own / "libcudnn.so.9").write_bytes(b"")
    assert unresolved_libraries({"LD_LIBRARY_PATH": str(own)}, [site], system={"libcurand.so.10"}) == []
    assert pip_install_hint(["libcublas.so.13", "libcublasLt.so.13"]).endswith("install 'nvidia-cublas~=13.0'")


def test_the_sidecar_is_started_with_the_library_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for node (a real process) that records the environment it was started with.
    site = fake_site_packages(tmp_path, CUDA_LIBRARIES)
    monkeypatch.syspath_prepend(str(site))
    dump = tmp_path / "env.txt"
    node = tmp_path / "node"
    node.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo v22.0.0; exit 0; fi\n'
                    f'printf %s "$LD_LIBRARY_PATH" > {dump}\nexit 3\n')
    node.chmod(0o755)
    repo = tmp_path / "repo"
    (repo / "server" / "dist").mkdir(parents=True)
    (repo / "server" / "dist" / "cli.js").write_text("")
    monkeypatch.setenv("RADIO_NODE", str(node))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/mine")
    sidecar = LocalSidecar(SidecarSpec(graphs=(("m", str(tmp_path)),)), repo=repo, startup_timeout_s=20)
    with pytest.raises(RuntimeError, match="exited with code 3"):
        sidecar.start()
    sidecar.stop()
    lib = site / "nvidia"
    assert dump.read_text().split(os.pathsep) == [str(lib / "cu13" / "lib"), str(lib / "cudnn" / "lib"), "/opt/mine"]


def test_no_gpu_means_no_install(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path), "ONNXRUNTIME_NODE_INSTALL": "skip"}  # as in CI
    out = subprocess.run([sys.executable, "-m", "client.cuda_provider", "--source", str(source), "install", "--auto"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "not installing the CUDA provider: no NVIDIA GPU found" in out.stderr
    assert sorted(p.name for p in bin_dir(source).iterdir()) == ["libonnxruntime.so.1"]
    assert not (tmp_path / ".cache").exists()  # no download started


def test_when_to_install(tmp_path: Path) -> None:
    gpu = {"PATH": str(fake_nvidia_smi(tmp_path / "bin"))}
    assert cuda_provider.wanted({"PATH": str(tmp_path / "empty")}).install is False
    decision = cuda_provider.wanted(gpu)
    assert decision.install and not decision.explicit and "NVIDIA H200" in decision.reason
    assert cuda_provider.wanted({**gpu, "RADIO_CUDA_PROVIDER": "skip"}).install is False
    asked = cuda_provider.wanted({"PATH": "", "RADIO_CUDA_PROVIDER": "install"})
    assert asked.install and asked.explicit
    with pytest.raises(CudaProviderError, match="RADIO_CUDA_PROVIDER='maybe' is not valid; use auto"):
        cuda_provider.wanted({"RADIO_CUDA_PROVIDER": "maybe"})


def test_zoo_set_up_reports_a_failure_once_and_raises_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(tmp_path / "src")
    other = "aarch64" if MACHINE == "x86_64" else "x86_64"
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RADIO_ORT_GPU_WHEEL", str(make_wheel(tmp_path / "w", machine=other)))  # fails, offline
    logs: list[str] = []
    assert cuda_provider.ensure_for_zoo(source, log=logs.append) is None
    assert any(line.startswith("WARNING: the CUDA provider could not be installed (NVIDIA GPU found") for line in logs)
    record = read_record(bin_dir(source))
    assert record is not None and record["onnxruntime"] == VERSION and "this machine is Linux" in record["failed"]
    logs.clear()
    assert cuda_provider.ensure_for_zoo(source, log=logs.append) is None  # not tried again on every load
    assert len(logs) == 1 and "an earlier attempt failed ((b) pypi: " in logs[0] and "RADIO_CUDA_PROVIDER=install" in logs[0]
    monkeypatch.setenv("RADIO_CUDA_PROVIDER", "install")
    with pytest.raises(CudaProviderError, match="no install route worked"):
        cuda_provider.ensure_for_zoo(source, log=logs.append)
    # A good wheel replaces the failure record with the files' record.
    monkeypatch.setenv("RADIO_ORT_GPU_WHEEL", str(make_wheel(tmp_path / "good")))
    assert cuda_provider.ensure_for_zoo(source, log=logs.append) is not None
    assert (read_record(bin_dir(source)) or {}).get("route") == "pypi"
    assert not list(bin_dir(source).glob(f"{RECORD_FILE}.*"))  # no temporary record left


def test_check_says_what_is_missing(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    out = subprocess.run([sys.executable, "-m", "client.cuda_provider", "--source", str(source), "check"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"CUDA provider: missing {CUDA}, {SHARED}: `python -m client.cuda_provider install`" in out.stderr
    assert "not ready for --provider cuda" in out.stderr
