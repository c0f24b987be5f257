import assert from "node:assert/strict";
import {
  ATTR_OUT_SIZE,
  direntSize,
  encodeInitOut,
  encodeNotifyStore,
  ENTRY_OUT_SIZE,
  INIT_OUT_SIZE,
  parseInHeader,
  parseInitIn,
  writeAttrOut,
  writeDirent,
  writeEntryOut,
} from "./protocol.ts";

// Offsets below are those of include/uapi/linux/fuse.h (little-endian).

Deno.test("fuse protocol: in-header and init_in parsing", () => {
  const b = new Uint8Array(40 + 64);
  const v = new DataView(b.buffer);
  v.setUint32(0, b.length, true);
  v.setUint32(4, 26, true);
  v.setBigUint64(8, 0x1122334455n, true);
  v.setBigUint64(16, 1n, true);
  v.setUint32(24, 1000, true);
  v.setUint32(28, 100, true);
  v.setUint32(32, 4242, true);
  v.setUint32(40, 7, true);
  v.setUint32(44, 45, true);
  v.setUint32(48, 131072, true);
  v.setUint32(52, 0x40000000 | 1, true);
  v.setUint32(56, 3, true);
  assert.deepEqual(parseInHeader(b), {
    len: 104,
    opcode: 26,
    unique: 0x1122334455n,
    nodeid: 1n,
    uid: 1000,
    gid: 100,
    pid: 4242,
  });
  assert.deepEqual(parseInitIn(b.subarray(40)), {
    major: 7,
    minor: 45,
    maxReadahead: 131072,
    flags: 0x40000001,
    flags2: 3,
  });
  assert.throws(() => parseInHeader(new Uint8Array(39)), /short FUSE request/);
});

Deno.test("fuse protocol: init_out is 64 bytes with max_write at 20 and max_pages at 28", () => {
  const out = encodeInitOut({
    major: 7,
    minor: 31,
    maxReadahead: 1 << 20,
    flags: (1 << 22) | (1 << 13),
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: 1 << 20,
    timeGran: 1,
    maxPages: 256,
  });
  assert.equal(out.length, INIT_OUT_SIZE);
  const v = new DataView(out.buffer);
  assert.equal(v.getUint32(4, true), 31);
  assert.equal(v.getUint32(12, true), (1 << 22) | (1 << 13));
  assert.equal(v.getUint16(16, true), 64);
  assert.equal(v.getUint16(18, true), 48);
  assert.equal(v.getUint32(20, true), 1 << 20);
  assert.equal(v.getUint32(24, true), 1);
  assert.equal(v.getUint16(28, true), 256);
  assert.ok(out.subarray(30).every((x) => x === 0));
});

Deno.test("fuse protocol: entry_out, attr_out and dirent layouts", () => {
  const attr = { ino: 77n, size: 1000, mode: 0o100444, nlink: 1, time: 1 };
  const e = new Uint8Array(ENTRY_OUT_SIZE);
  const ev = new DataView(e.buffer);
  writeEntryOut(ev, 0, attr, { entrySec: 86400, attrSec: 3600 });
  assert.equal(ev.getBigUint64(0, true), 77n); // nodeid
  assert.equal(ev.getBigUint64(16, true), 86400n); // entry_valid
  assert.equal(ev.getBigUint64(24, true), 3600n); // attr_valid
  assert.equal(ev.getBigUint64(40, true), 77n); // attr.ino
  assert.equal(ev.getBigUint64(48, true), 1000n); // attr.size
  assert.equal(ev.getBigUint64(56, true), 2n); // attr.blocks (512-byte units)
  assert.equal(ev.getBigUint64(40 + 32, true), 1n); // attr.mtime
  assert.equal(ev.getUint32(40 + 60, true), 0o100444); // attr.mode
  assert.equal(ev.getUint32(40 + 64, true), 1); // attr.nlink
  const a = new Uint8Array(ATTR_OUT_SIZE);
  writeAttrOut(new DataView(a.buffer), 0, attr, 5);
  assert.equal(new DataView(a.buffer).getBigUint64(16, true), 77n);
  assert.equal(direntSize(1), 32);
  assert.equal(direntSize(8), 32);
  assert.equal(direntSize(9), 40);
  const d = new Uint8Array(40).fill(0xff);
  const n = writeDirent(
    d,
    new DataView(d.buffer),
    0,
    9n,
    3,
    8,
    new TextEncoder().encode("hello.txt"),
  );
  assert.equal(n, 40);
  const dv = new DataView(d.buffer);
  assert.equal(dv.getBigUint64(0, true), 9n);
  assert.equal(dv.getBigUint64(8, true), 3n);
  assert.equal(dv.getUint32(16, true), 9);
  assert.equal(dv.getUint32(20, true), 8);
  assert.equal(new TextDecoder().decode(d.subarray(24, 33)), "hello.txt");
  assert.ok(d.subarray(33, 40).every((x) => x === 0));
});

Deno.test("fuse protocol: notify_store message layout", () => {
  const data = new TextEncoder().encode("hello");
  const m = encodeNotifyStore(42n, 4096, data);
  const v = new DataView(m.buffer);
  assert.equal(m.length, 16 + 24 + 5);
  assert.equal(v.getUint32(0, true), m.length); // len
  assert.equal(v.getInt32(4, true), 4); // FUSE_NOTIFY_STORE in `error`
  assert.equal(v.getBigUint64(8, true), 0n); // unique 0: a notification
  assert.equal(v.getBigUint64(16, true), 42n); // nodeid
  assert.equal(v.getBigUint64(24, true), 4096n); // offset
  assert.equal(v.getUint32(32, true), 5); // size
  assert.equal(v.getUint32(36, true), 0); // padding
  assert.equal(new TextDecoder().decode(m.subarray(40)), "hello");
});
