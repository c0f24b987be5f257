/** Encoding a path info once ({@linkcode encodeUnkeyedValidPathInfo}, `take`) gives the streamed bytes. */
import assert from "node:assert/strict";
import {
  encodeUnkeyedValidPathInfo,
  protocolVersion,
  readUnkeyedValidPathInfo,
  WireWriter,
  writeUnkeyedValidPathInfo,
} from "./mod.ts";
import { readerOf } from "./test_util.ts";

const info = {
  deriver: "/nix/store/00000000000000000000000000000000-x.drv",
  narHash: "ab".repeat(32),
  references: [
    "/nix/store/11111111111111111111111111111111-b",
    "/nix/store/00000000000000000000000000000000-a",
  ],
  registrationTime: 7,
  narSize: 123456,
  ultimate: true,
  sigs: ["k-1:c2ln", "a-1:c2ln"],
  ca: "fixed:r:sha256:" + "1".repeat(52),
};

Deno.test("wire: an encoded path info equals the streamed one, per version", async () => {
  for (const minor of [10, 15, 16, 34, 38]) {
    const v = protocolVersion(minor, []);
    const chunks: Uint8Array[] = [];
    const w = new WireWriter({
      write: (c) => void chunks.push(c.slice()),
      close() {},
      abort() {},
    });
    writeUnkeyedValidPathInfo(w, v, info);
    await w.flush();
    const streamed = Uint8Array.from(chunks.flatMap((c) => [...c]));
    const encoded = encodeUnkeyedValidPathInfo(v, info);
    assert.deepEqual(encoded, streamed, `1.${minor}`);
    const back = await readUnkeyedValidPathInfo(readerOf(encoded, [3]), v);
    assert.equal(back.narSize, info.narSize);
    assert.deepEqual(back.sigs, minor >= 16 ? ["a-1:c2ln", "k-1:c2ln"] : []);
  }
});

Deno.test("wire: take() returns everything buffered, across a spilled buffer, and empties the writer", () => {
  const w = new WireWriter({
    write() {
      throw new Error("nothing is sent");
    },
    close() {},
    abort() {},
  }, 64);
  w.u64(1).bytes(new Uint8Array(100).fill(9)).u64(2);
  const b = w.take();
  assert.equal(b.length, 8 + 8 + 104 + 8);
  assert.equal(b[0], 1);
  assert.equal(b[16], 9);
  assert.equal(b[8 + 8 + 104], 2);
  assert.equal(w.take().length, 0);
});
