import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EAGAIN, ffiAvailable, libc, O_RDWR, POLLIN } from "./libc.ts";

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

Deno.test("libc readNow, pollAsync, setNonBlocking: a non-blocking FIFO reads EAGAIN when empty, polls readable once written, and the poll waits off the thread", async () => {
  if (!ffiAvailable()) return;
  const c = await libc();
  if (!c.readNow || !c.pollAsync || !c.setNonBlocking) {
    throw new Error(`${c.runtime}: the direct FUSE loop needs these calls`);
  }
  const dir = fs.mkdtempSync(join(tmpdir(), "snix-fifo-"));
  const path = join(dir, "fifo");
  const { execFileSync } = await import("node:child_process");
  execFileSync("mkfifo", [path]);
  // O_RDWR: opening a FIFO does not wait for a writer.
  const fd = c.open(path, O_RDWR, 0);
  try {
    assert.ok(c.setNonBlocking(fd));
    const buf = new Uint8Array(64);
    assert.equal(c.readNow(fd, buf), -EAGAIN);
    assert.equal(await c.pollAsync(fd, POLLIN, 0), 0, "nothing to read yet");
    // A poll with no timeout resolves once another party writes: the event
    // loop must stay free meanwhile (the timer below runs first).
    const order: string[] = [];
    const polled = c.pollAsync(fd, POLLIN, -1).then((ev) => {
      order.push("poll");
      return ev;
    });
    await new Promise((r) => setTimeout(r, 50));
    order.push("timer");
    assert.equal(c.write(fd, new Uint8Array([7, 8, 9])), 3);
    assert.ok((await polled) & POLLIN);
    assert.deepEqual(order, ["timer", "poll"]);
    assert.equal(c.readNow(fd, buf), 3);
    assert.deepEqual(buf.subarray(0, 3), new Uint8Array([7, 8, 9]));
    assert.equal(c.readNow(fd, buf), -EAGAIN);
  } finally {
    c.close(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
