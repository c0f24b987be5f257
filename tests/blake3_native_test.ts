// The native BLAKE3 (lib/castore/blake3_native.ts) is loaded on this
// platform, and it agrees with the WebAssembly fallback (SNIX_BLAKE3=wasm in
// a second process) and with b3sum, one-shot and incremental.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  blake3Implementation,
  blake3Sync,
  createBlake3,
  digestToHex,
} from "../lib/castore/digest.ts";

/** Deterministic inputs around BLAKE3's 64-byte block and 1 KiB chunk edges. */
const SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 4096, 65537, 1 << 20];
function input(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 8)) & 255;
  return b;
}

function b3sum(data: Uint8Array): string {
  const r = spawnSync("b3sum", ["--no-names"], { input: data });
  assert.equal(r.status, 0, String(r.stderr));
  return String(r.stdout).trim();
}

Deno.test("blake3: the native addon is in use on x86-64 Linux", () => {
  if (Deno.build.os === "linux" && Deno.build.arch === "x86_64") {
    assert.equal(blake3Implementation, "native");
  }
});

Deno.test("blake3: native and WebAssembly digests agree with b3sum", async () => {
  const script = `
    import { blake3Implementation, blake3Sync, createBlake3, digestToHex } from "./lib/castore/digest.ts";
    const input = ${input.toString()};
    const out = [blake3Implementation];
    for (const n of ${JSON.stringify(SIZES)}) {
      const b = input(n);
      const h = createBlake3();
      h.update(b.subarray(0, n >> 1)).update(b.subarray(n >> 1));
      out.push(digestToHex(blake3Sync(b)) + " " + digestToHex(h.digest()));
    }
    console.log(JSON.stringify(out));`;
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    env: { SNIX_BLAKE3: "wasm" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  const [impl, ...wasm] = JSON.parse(new TextDecoder().decode(r.stdout));
  assert.equal(impl, "wasm");
  SIZES.forEach((n, i) => {
    const b = input(n);
    const h = createBlake3();
    for (let o = 0; o < n; o += 1000) h.update(b.subarray(o, o + 1000));
    const want = b3sum(b);
    assert.equal(digestToHex(blake3Sync(b)), want, `one-shot, ${n} bytes`);
    assert.equal(digestToHex(h.digest()), want, `incremental, ${n} bytes`);
    assert.equal(wasm[i], `${want} ${want}`, `wasm, ${n} bytes`);
  });
});
