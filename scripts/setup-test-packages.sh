#!/usr/bin/env bash
# Debian packages the tests use besides Node and Python:
#  - SwiftShader, a CPU implementation of Vulkan that Debian ships in its `chromium` package
#    (/usr/lib/chromium/vk_swiftshader_icd.json), plus the Vulkan loader (`libvulkan1`): the driver
#    the WebGPU tests run onnxruntime's WebGPU provider on without a GPU; the tests point
#    VK_ICD_FILENAMES at it themselves, so nothing else on the machine starts using it. (Mesa's
#    lavapipe, mesa-vulkan-drivers, is refused by Dawn: "No supported adapters".) chromium also
#    drives the FiftyOne App in the App tests.
#  - ffmpeg: FiftyOne reads video frames with it (the video tests make their clips with it too).
# Idempotent: installs only what is missing. In CI (CI set) a failure is an error; elsewhere a warning,
# and the tests that need the package skip with the reason.
set -euo pipefail

ICD=/usr/lib/chromium/vk_swiftshader_icd.json
log() { echo "[setup-test-packages] $*"; }

missing=()
[ -f "$ICD" ] || missing+=(chromium)
if command -v ldconfig >/dev/null 2>&1; then
  # capture first: `ldconfig -p | grep -q` trips pipefail via SIGPIPE
  ld_cache="$(ldconfig -p)"
  grep -q "[[:space:]]libvulkan.so.1 " <<<"$ld_cache" || missing+=(libvulkan1)
fi
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
if [ "${#missing[@]}" -eq 0 ]; then
  log "present: SwiftShader ($ICD), the Vulkan loader, ffmpeg"
  exit 0
fi

fail() {
  if [ -n "${CI:-}" ]; then echo "[setup-test-packages] ERROR: $*" >&2; exit 1; fi
  echo "[setup-test-packages] WARNING: $*; the tests that need them will be skipped" >&2
  exit 0
}
command -v apt-get >/dev/null 2>&1 || fail "no apt-get: install ${missing[*]} (Debian package names) by hand"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || fail "not root and no sudo: install ${missing[*]} by hand"
  sudo=(sudo)
fi
log "apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq || fail "apt-get update failed"
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" || fail "apt-get install ${missing[*]} failed"
[ -f "$ICD" ] || fail "$ICD is still missing after installing chromium"
command -v ffmpeg >/dev/null 2>&1 || fail "ffmpeg is still missing after installing it"
log "installed: ${missing[*]}"
