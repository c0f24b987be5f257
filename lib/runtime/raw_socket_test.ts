import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  connectRaw,
  enlargeUnixSendBuffer,
  type RawSocket,
  type RawTarget,
  setLoopbackCongestion,
  tcpCongestion,
} from "./raw_socket.ts";

/** Both implementations: the runtime's own sockets and node:net. */
const IMPLS = ["runtime", "node"] as const;

async function withImpl<T>(
  impl: (typeof IMPLS)[number],
  fn: () => Promise<T>,
): Promise<T> {
  const before = process.env.SNIX_RAW_SOCKET;
  if (impl === "node") process.env.SNIX_RAW_SOCKET = "node";
  else delete process.env.SNIX_RAW_SOCKET;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.SNIX_RAW_SOCKET;
    else process.env.SNIX_RAW_SOCKET = before;
  }
}

/** A server on a fresh unix socket and on TCP; `onConn` gets each connection. */
async function servers(
  onConn: (s: net.Socket) => void,
): Promise<{ targets: RawTarget[]; close: () => Promise<void> }> {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "raw-socket-test-"));
  const path = join(dir, "s.sock");
  const guarded = (s: net.Socket) => {
    s.on("error", () => {}); // clients here may close at any time
    onConn(s);
  };
  const unix = net.createServer(guarded);
  const tcp = net.createServer(guarded);
  await new Promise<void>((r) => unix.listen(path, r));
  await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", r));
  const port = (tcp.address() as net.AddressInfo).port;
  return {
    targets: [{ path }, { host: "127.0.0.1", port }],
    close: async () => {
      await new Promise((r) => unix.close(r));
      await new Promise((r) => tcp.close(r));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Everything `sock` receives until its end, and how it ended. */
function collect(
  sock: RawSocket,
): Promise<{ bytes: Uint8Array; pieces: number; error?: Error }> {
  return new Promise((resolve) => {
    const parts: Uint8Array[] = [];
    let ends = 0;
    sock.start((p) => parts.push(p), (error) => {
      ends++;
      assert.equal(ends, 1, "onEnd called once");
      const n = parts.reduce((a, p) => a + p.length, 0);
      const bytes = new Uint8Array(n);
      let o = 0;
      for (const p of parts) {
        bytes.set(p, o);
        o += p.length;
      }
      resolve({ bytes, pieces: parts.length, error });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("raw socket: bytes arrive whole and in order across partial reads (unix, TCP, both implementations); writes in order; pieces stay valid", async () => {
  const payload = new Uint8Array(3 << 20).map((_, i) => (i * 31 + 7) & 0xff);
  const received: Uint8Array[] = [];
  const srv = await servers((s) => {
    s.on("data", (d: Uint8Array) => received.push(new Uint8Array(d)));
    void (async () => {
      // Small pieces with pauses (the reader sees partial reads), then big ones.
      let o = 0;
      for (const n of [1, 2, 9, 100, 5000]) {
        s.write(payload.subarray(o, o + n));
        o += n;
        await sleep(5);
      }
      s.end(payload.subarray(o));
    })();
  });
  try {
    for (const impl of IMPLS) {
      for (const target of srv.targets) {
        received.length = 0;
        await withImpl(impl, async () => {
          const sock = await connectRaw(target);
          const got = collect(sock);
          for (const w of ["a", "bc", "def"]) {
            sock.write(new TextEncoder().encode(w));
          }
          const { bytes, pieces, error } = await got;
          assert.equal(error, undefined);
          assert.ok(pieces > 1, "several pieces");
          assert.deepEqual(bytes, payload, `${impl} ${JSON.stringify(target)}`);
          for (let i = 0; i < 50 && received.length === 0; i++) await sleep(5);
          assert.equal(
            new TextDecoder().decode(
              Uint8Array.from(received.flatMap((r) => [...r])),
            ),
            "abcdef",
          );
          sock.close();
        });
      }
    }
  } finally {
    await srv.close();
  }
});

Deno.test("raw socket: the peer closing mid-message ends the socket once with what arrived; close() stops delivery", async () => {
  const srv = await servers((s) => {
    s.write(new Uint8Array(1000).fill(7));
    setTimeout(() => s.destroy(), 20);
  });
  try {
    for (const impl of IMPLS) {
      for (const target of srv.targets) {
        await withImpl(impl, async () => {
          const sock = await connectRaw(target);
          const { bytes } = await collect(sock);
          assert.deepEqual(bytes, new Uint8Array(1000).fill(7));
          sock.close();
          sock.close(); // twice is fine
          sock.write(new Uint8Array(1)); // after close: dropped, no throw
        });
      }
    }
    // close() before the peer's end: onEnd is not called.
    for (const impl of IMPLS) {
      await withImpl(impl, async () => {
        const sock = await connectRaw(srv.targets[0]);
        let ended = false;
        sock.start(() => {}, () => ended = true);
        sock.close();
        await sleep(60);
        assert.equal(ended, false);
      });
    }
  } finally {
    await srv.close();
  }
});

Deno.test("raw socket: a refused or missing target gives a one-line error naming it", async () => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "raw-socket-test-"));
  // A port that was just free: nothing listens there.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  try {
    for (const impl of IMPLS) {
      await withImpl(impl, async () => {
        await assert.rejects(
          connectRaw({ path: join(dir, "none.sock") }),
          (e: Error) => {
            assert.equal(
              e.message,
              `cannot connect to unix:${
                join(dir, "none.sock")
              }: no such socket`,
            );
            return true;
          },
        );
        await assert.rejects(
          connectRaw({ host: "127.0.0.1", port }),
          (e: Error) => {
            assert.equal(
              e.message,
              `cannot connect to 127.0.0.1:${port}: connection refused`,
            );
            return true;
          },
        );
      });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("raw socket: setLoopbackCongestion sets loopback TCP connections only (read back with getsockopt)", async () => {
  const got: Promise<[boolean, string | undefined]>[] = [];
  const srv = await servers((s) => {
    got.push(
      setLoopbackCongestion(s, "reno").then(async (
        set,
      ) => [set, await tcpCongestion(s)]),
    );
    s.end();
  });
  try {
    for (const target of srv.targets) {
      const sock = await connectRaw(target);
      await collect(sock);
      sock.close();
    }
    const [unix, tcp] = await Promise.all(got);
    assert.deepEqual(unix, [false, undefined], "unix socket: left alone");
    assert.deepEqual(tcp, [true, "reno"], "loopback TCP: set");
  } finally {
    await srv.close();
  }
});

Deno.test("raw socket: enlargeUnixSendBuffer sets unix sockets only", async () => {
  const got: Promise<boolean>[] = [];
  const srv = await servers((s) => {
    got.push(enlargeUnixSendBuffer(s, 4 << 20));
    s.end();
  });
  try {
    for (const target of srv.targets) {
      const sock = await connectRaw(target);
      await collect(sock);
      sock.close();
    }
    const [unix, tcp] = await Promise.all(got);
    assert.equal(unix, true, "unix socket: set");
    assert.equal(tcp, false, "TCP socket: left alone");
  } finally {
    await srv.close();
  }
});
