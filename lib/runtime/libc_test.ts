import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ffiAvailable, libc } from "./libc.ts";

const O_WRONLY = 1;
const O_CREAT = 0o100;

Deno.test("libc writev: parts (views at offsets, empty ones) land in order in one call", async () => {
  if (!ffiAvailable()) return;
  const c = await libc();
  const dir = fs.mkdtempSync(join(tmpdir(), "snix-writev-"));
  try {
    const path = join(dir, "out");
    const fd = c.open(path, O_WRONLY | O_CREAT, 0o600);
    assert.ok(fd >= 0);
    const big = new Uint8Array(300_000).map((_, i) => (i * 13) & 255);
    const parts = [
      new Uint8Array([1, 2, 3]),
      new Uint8Array(0),
      big.subarray(1000, 200_000),
      new Uint8Array(new ArrayBuffer(64), 10, 20).fill(9),
      big.subarray(299_990),
    ];
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    assert.equal(c.writev(fd, parts), total);
    assert.equal(c.writev(fd, []), 0);
    c.close(fd);
    const want = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      want.set(p, o);
      o += p.byteLength;
    }
    assert.deepEqual(new Uint8Array(fs.readFileSync(path)), want);
    assert.ok(
      c.writev(-1, [new Uint8Array(1)]) < 0,
      "EBADF as a negative errno",
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
