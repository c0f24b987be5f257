/**
 * The socket source and sink over a real unix socket: bytes in order across
 * chunks with backpressure, the end and errors, and replies from reused
 * buffers arriving intact however fast they are flushed.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WireReader, WireWriter } from "../wire/mod.ts";
import { socketStreams } from "./socket_streams.ts";

/** A connected pair: `server` is the accepted side. */
async function pair(): Promise<
  { server: Socket; client: Socket; done: () => void }
> {
  const dir = mkdtempSync(join(tmpdir(), "snix-socket-streams-"));
  const path = join(dir, "s");
  let accepted!: (s: Socket) => void;
  const got = new Promise<Socket>((r) => (accepted = r));
  const srv = createServer((s) => accepted(s));
  await new Promise<void>((r) => srv.listen(path, r));
  const client = connect(path);
  await new Promise((r) => client.once("connect", r));
  const server = await got;
  return {
    server,
    client,
    done: () => {
      client.destroy();
      server.destroy();
      srv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

Deno.test("socket streams: bytes arrive in order with backpressure; the end after the queue", async () => {
  const { server, client, done } = await pair();
  try {
    const { readable } = socketStreams(server, 64 << 10);
    const data = pattern(3 << 20, 7);
    const wrote = new Promise<void>((r) => client.end(data, r));
    // Read slowly at first: the socket must pause rather than queue it all.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server.isPaused(), true, "paused above the high-water mark");
    const got: Uint8Array[] = [];
    for (;;) {
      const { value, done } = await readable.read();
      if (done) break;
      got.push(value.slice());
    }
    await wrote;
    const all = new Uint8Array(got.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of got) all.set(c, o), o += c.length;
    assert.equal(all.length, data.length);
    assert.ok(all.every((b, i) => b === data[i]), "same bytes, same order");
    assert.deepEqual(await readable.read(), { value: undefined, done: true });
  } finally {
    done();
  }
});

Deno.test("socket streams: a second read while one waits is refused; cancel ends the waiting read", async () => {
  const { server, done } = await pair();
  try {
    const { readable } = socketStreams(server);
    const first = readable.read();
    await assert.rejects(readable.read(), /another is pending/);
    await readable.cancel();
    assert.deepEqual(await first, { value: undefined, done: true });
    assert.equal(server.destroyed, true);
  } finally {
    done();
  }
});

Deno.test("socket streams: replies flushed back to back from reused buffers arrive intact", async () => {
  const { server, client, done } = await pair();
  try {
    const { writable } = socketStreams(server);
    const w = new WireWriter(writable, 256 << 10);
    const r = new WireReader(socketStreams(client).readable);
    const n = 3000;
    const sending = (async () => {
      for (let i = 0; i < n; i++) {
        // Sizes around the small-reply limit too, so both paths interleave.
        w.u64(i).bytes(pattern(i % 7 === 0 ? 20000 : 100 + (i % 900), i));
        await w.flush();
      }
    })();
    for (let i = 0; i < n; i++) {
      assert.equal(await r.readNumber(), i);
      const b = await r.readBytes(1 << 20);
      const want = pattern(i % 7 === 0 ? 20000 : 100 + (i % 900), i);
      assert.equal(b.length, want.length);
      assert.ok(b.every((x, j) => x === want[j]), `reply ${i} intact`);
    }
    await sending;
  } finally {
    done();
  }
});
