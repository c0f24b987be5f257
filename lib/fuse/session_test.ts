import assert from "node:assert/strict";
import type { DeviceReader, LibC } from "../runtime/libc.ts";
import { EAGAIN, POLLERR, POLLIN } from "../runtime/libc.ts";
import { FuseSession } from "./session.ts";
import type { FuseFilesystem } from "./filesystem.ts";
import { S_IFDIR } from "./protocol.ts";

// Offsets are those of include/uapi/linux/fuse.h (little-endian).
function request(opcode: number, unique: bigint, body?: Uint8Array) {
  const b = new Uint8Array(40 + (body?.length ?? 0));
  const v = new DataView(b.buffer);
  v.setUint32(0, b.length, true);
  v.setUint32(4, opcode, true);
  v.setBigUint64(8, unique, true);
  v.setBigUint64(16, 1n, true);
  if (body) b.set(body, 40);
  return b;
}

function initIn(): Uint8Array {
  const b = new Uint8Array(64);
  const v = new DataView(b.buffer);
  v.setUint32(0, 7, true);
  v.setUint32(4, 31, true);
  v.setUint32(8, 131072, true);
  return b;
}

/**
 * A device that hands out queued requests to non-blocking reads, and whose
 * poll(2) fails as if interrupted by a signal (EINTR: POLLERR from the
 * binding) every other time, on and off the main thread.
 */
function fakeDevice() {
  const queue: Uint8Array[] = [];
  const replies: bigint[] = [];
  let gone = false;
  let polls = 0;
  const ENODEV = 19;
  const rev = () => (++polls % 2 === 0 ? POLLERR : queue.length ? POLLIN : 0);
  const libc: Partial<LibC> = {
    runtime: "deno",
    readNow(_fd, buf) {
      const m = queue.shift();
      if (m) {
        buf.set(m);
        return m.length;
      }
      return gone ? -ENODEV : -EAGAIN;
    },
    poll: () => rev(),
    pollAsync: () => new Promise((r) => setTimeout(() => r(rev()), 1)),
    setNonBlocking: () => true,
    write(_fd, data) {
      replies.push(
        new DataView(data.buffer, data.byteOffset).getBigUint64(8, true),
      );
      return data.byteLength;
    },
    reader: (): DeviceReader => {
      throw new Error("the direct loop must not start reader threads");
    },
  };
  return {
    libc: libc as LibC,
    queue,
    replies,
    polls: () => polls,
    end: () => gone = true,
  };
}

const fs: FuseFilesystem = {
  entryTimeout: 1,
  getattr: (ino: bigint) =>
    Promise.resolve({ ino, size: 0, mode: S_IFDIR | 0o555, nlink: 1, time: 1 }),
} as unknown as FuseFilesystem;

Deno.test("fuse session: the direct loop survives interrupted polls and ends only when reads say the device is gone", async () => {
  const dev = fakeDevice();
  const session = new FuseSession(dev.libc, 3, fs, { notify: false });
  const running = session.run();
  dev.queue.push(request(26, 1n, initIn()));
  await session.ready;
  // Requests arriving one by one, with pauses, while polls keep failing.
  for (let i = 0n; i < 20n; i++) {
    dev.queue.push(request(3, 100n + i)); // GETATTR
    await new Promise((r) => setTimeout(r, i % 3n === 0n ? 5 : 0));
  }
  for (let t = 0; t < 200 && dev.replies.length < 21; t++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.deepEqual(dev.replies, [
    1n,
    ...Array.from({ length: 20 }, (_, i) => 100n + BigInt(i)),
  ]);
  assert.ok(dev.polls() > 4, `${dev.polls()} polls`);
  dev.end();
  await running; // returns: a read reported ENODEV
});
