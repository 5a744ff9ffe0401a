// The Vulkan drivers (ICD manifests) the Vulkan loader would offer Dawn, read the way the loader
// finds them. Used to tell a real GPU from a software rasteriser: Dawn reports no adapter details
// through onnxruntime, and on a software driver (SwiftShader) the tiny graph runs ~600× slower than
// on the CPU provider (224², batch 4: 5.9 s vs 9.5 ms on 2 cores), so auto must not take it.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import os from "node:os";

export interface VulkanDriver {
  manifest: string;
  /** The driver library the manifest names (as written: a bare name is found on the library path). */
  library: string;
  /** A CPU implementation of Vulkan, not a GPU. */
  software: boolean;
}

/** Driver libraries that implement Vulkan on the CPU: SwiftShader (Chromium's) and Mesa's lavapipe. */
const SOFTWARE_DRIVERS = [/swiftshader/i, /libvulkan_lvp\.so/];

function listed(env: NodeJS.ProcessEnv, name: string): string[] {
  return (env[name] ?? "").split(":").filter((s) => s !== "");
}

/** Manifest files: VK_DRIVER_FILES / VK_ICD_FILENAMES replace the search; else the loader's folders (and VK_ADD_DRIVER_FILES). */
function manifests(env: NodeJS.ProcessEnv): string[] {
  const expand = (p: string): string[] => {
    try {
      return statSync(p).isDirectory()
        ? readdirSync(p)
            .filter((f) => f.endsWith(".json"))
            .sort()
            .map((f) => join(p, f))
        : [p];
    } catch {
      return [];
    }
  };
  const explicit = listed(env, "VK_DRIVER_FILES").length > 0 ? listed(env, "VK_DRIVER_FILES") : listed(env, "VK_ICD_FILENAMES");
  if (explicit.length > 0) return explicit.flatMap(expand);
  const home = env.HOME ?? os.homedir();
  const configDirs = [...(listed(env, "XDG_CONFIG_DIRS").length ? listed(env, "XDG_CONFIG_DIRS") : ["/etc/xdg"]), "/etc"];
  const dataDirs = [
    env.XDG_DATA_HOME ?? join(home, ".local/share"),
    ...(listed(env, "XDG_DATA_DIRS").length ? listed(env, "XDG_DATA_DIRS") : ["/usr/local/share", "/usr/share"]),
  ];
  return [...listed(env, "VK_ADD_DRIVER_FILES"), ...[...configDirs, ...dataDirs].map((d) => join(d, "vulkan", "icd.d"))].flatMap(expand);
}

export function vulkanDrivers(env: NodeJS.ProcessEnv = process.env): VulkanDriver[] {
  const out: VulkanDriver[] = [];
  for (const manifest of manifests(env)) {
    if (!existsSync(manifest)) continue;
    try {
      const j = JSON.parse(readFileSync(manifest, "utf8")) as { ICD?: { library_path?: string } };
      const lib = j.ICD?.library_path;
      if (!lib) continue;
      // A relative path in a manifest is relative to the manifest's folder.
      const library = lib.includes("/") && !lib.startsWith("/") ? resolve(dirname(manifest), lib) : lib;
      out.push({ manifest, library, software: SOFTWARE_DRIVERS.some((re) => re.test(basename(library))) });
    } catch {
      // An unreadable manifest is skipped, as the loader does.
    }
  }
  return out;
}
