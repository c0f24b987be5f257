/**
 * The native BLAKE3 of `@napi-rs/blake-hash` (the Rust `blake3` crate with
 * its SIMD back ends, as a Node-API addon), when it can be loaded.
 *
 * Measured under Deno 2.9 on this machine, 256 KiB inputs: about 3.5 GB/s,
 * against about 0.5-0.76 GB/s for the WebAssembly hashers. BLAKE3 is the
 * biggest CPU cost of ingestion and of every verified read, so this one
 * dependency speeds up import, export, FUSE and gRPC reads alike.
 *
 * Only the platform package for x86-64 Linux with glibc is a dependency (the
 * umbrella package's optional dependencies do not resolve under Deno: some
 * platform packages lack its version). Anywhere else, or with
 * `SNIX_BLAKE3=wasm` in the environment, {@linkcode nativeBlake3} is
 * `undefined` and ./digest.ts uses the WebAssembly hashers.
 *
 * Loading: `require` through `createRequire` works under Deno and Bun; a
 * binary made by `bun build --compile` has no `node_modules`, but Bun embeds
 * the addon named by the dynamic `import()` below and loads it from there.
 *
 * @module
 */
import { createRequire } from "node:module";
import process from "node:process";

/** The parts of the addon castore uses. */
export interface NativeBlake3 {
  /** One-shot digest (32 bytes). */
  blake3(input: Uint8Array): Uint8Array;
  /** Incremental hasher. */
  Blake3Hasher: new () => {
    update(input: Uint8Array): unknown;
    digestBuffer(): Uint8Array;
  };
}

const PACKAGE = "@napi-rs/blake-hash-linux-x64-gnu";

function usable(m: unknown): NativeBlake3 | undefined {
  const n = m as Partial<NativeBlake3> | undefined;
  return typeof n?.blake3 === "function" &&
      typeof n.Blake3Hasher === "function"
    ? n as NativeBlake3
    : undefined;
}

async function load(): Promise<NativeBlake3 | undefined> {
  if (process.env.SNIX_BLAKE3 === "wasm") return undefined;
  if (process.platform !== "linux" || process.arch !== "x64") return undefined;
  try {
    return usable(createRequire(import.meta.url)(PACKAGE));
  } catch { /* try the compiled-binary way */ }
  try {
    const m = await import("@napi-rs/blake-hash-linux-x64-gnu");
    return usable((m as { default?: unknown }).default ?? m);
  } catch {
    return undefined;
  }
}

/** The native addon, or `undefined` where it cannot be loaded. */
export const nativeBlake3: NativeBlake3 | undefined = await load();
