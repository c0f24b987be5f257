import assert from "node:assert/strict";
import { narStream } from "./nar_writer.ts";
import { readNar } from "./nar_reader.ts";
import { narNodeFromTree, type NarTree } from "./nar_memory.ts";
import { concatBytes } from "./bytes.ts";
import { collect, streamOf } from "./_test_streams.ts";

const b = (s: string) => new TextEncoder().encode(s);

const file = (contents: Uint8Array): NarTree => ({
  type: "regular",
  executable: false,
  contents,
});

Deno.test("nar reader: for await over contents (the direct path) reads, breaks and skips like the stream", async () => {
  const big = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
  const tree: NarTree = {
    type: "directory",
    entries: [
      [b("a"), file(big)],
      [b("b"), file(b("y".repeat(20)))],
      [b("c"), file(b("z".repeat(50)))],
    ],
  };
  const bytes = await collect(narStream(narNodeFromTree(tree)));
  for (const piece of [5, 4096, bytes.length]) {
    const got: Uint8Array[] = [];
    for await (const ev of readNar(streamOf(bytes, piece))) {
      if (ev.type !== "regular") continue;
      const parts: Uint8Array[] = [];
      for await (const c of ev.contents) {
        parts.push(c.slice());
        if (ev.path[0][0] === 0x62) break; // "b": only its first chunk
      }
      got.push(concatBytes(parts));
    }
    assert.deepEqual(got[0], big);
    assert.ok(got[1].length > 0);
    assert.deepEqual(got[1], b("y".repeat(20)).subarray(0, got[1].length));
    assert.deepEqual(got[2], b("z".repeat(50)));
  }
  // A locked contents stream cannot also be iterated.
  for await (const ev of readNar(streamOf(bytes, 64))) {
    if (ev.type !== "regular") continue;
    const r = ev.contents.getReader();
    assert.throws(() => ev.contents[Symbol.asyncIterator](), /locked/);
    r.releaseLock();
  }
});

Deno.test("nar reader: a NAR cut inside a file's contents fails the for await over them", async () => {
  const tree = file(new Uint8Array(10_000).fill(1));
  const bytes = await collect(narStream(narNodeFromTree(tree)));
  await assert.rejects(async () => {
    for await (const ev of readNar(streamOf(bytes.subarray(0, 5000), 999))) {
      if (ev.type === "regular") {
        for await (const _ of ev.contents) {
          /* drain */
        }
      }
    }
  }, /unexpected end of input in contents/);
});

Deno.test("nar reader: chunks() gives the contents without a stream; not together with contents", async () => {
  const big = new Uint8Array(100_000).map((_, i) => (i * 13) & 0xff);
  const tree: NarTree = {
    type: "directory",
    entries: [[b("a"), file(big)], [b("b"), file(b("hello"))], [
      b("c"),
      file(b("skipped")),
    ]],
  };
  const bytes = await collect(narStream(narNodeFromTree(tree)));
  for (const piece of [3, 8192, bytes.length]) {
    const got: Uint8Array[] = [];
    for await (const ev of readNar(streamOf(bytes, piece))) {
      if (ev.type !== "regular" || ev.path[0][0] === 0x63) continue; // "c" left unread
      const parts: Uint8Array[] = [];
      for await (const c of ev.chunks()) parts.push(c.slice());
      got.push(concatBytes(parts));
    }
    assert.deepEqual(got, [big, b("hello")]);
  }
  for await (const ev of readNar(streamOf(bytes, 64))) {
    if (ev.type !== "regular") continue;
    void ev.contents;
    assert.throws(() => ev.chunks(), /contents already in use/);
  }
});
