/**
 * SwiftShader, the CPU Vulkan driver that Debian's `chromium` package ships: with it onnxruntime's
 * WebGPU provider (Dawn over Vulkan) runs on a machine without a GPU. scripts/setup.sh installs it.
 * In CI (CI set) a missing driver fails the test; elsewhere the test is skipped with the reason.
 */
import { existsSync } from "node:fs";
import type { TestContext } from "node:test";

export const SWIFTSHADER_ICD = process.env.RADIO_TEST_SWIFTSHADER_ICD ?? "/usr/lib/chromium/vk_swiftshader_icd.json";

const MISSING = `${SWIFTSHADER_ICD} is missing: install Debian's chromium and libvulkan1 (scripts/setup.sh does) or set RADIO_TEST_SWIFTSHADER_ICD`;

/** The environment that makes SwiftShader the only Vulkan driver; null (test skipped) when it is absent outside CI. */
export function swiftshaderEnv(t: TestContext): NodeJS.ProcessEnv | null {
  if (existsSync(SWIFTSHADER_ICD)) return { ...process.env, VK_ICD_FILENAMES: SWIFTSHADER_ICD };
  if (process.env.CI) throw new Error(`CI: ${MISSING}`);
  t.skip(MISSING);
  return null;
}

/** For describe's skip option: false when SwiftShader is there; the reason outside CI; throws in CI. */
export function swiftshaderMissing(): string | false {
  if (existsSync(SWIFTSHADER_ICD)) return false;
  if (process.env.CI) throw new Error(`CI: ${MISSING}`);
  return MISSING;
}

/** No Vulkan driver at all: the loader is pointed at a manifest that does not exist. */
export function noVulkanEnv(): NodeJS.ProcessEnv {
  return { ...process.env, VK_ICD_FILENAMES: "/nonexistent/radio-test-no-vulkan-driver.json" };
}
