/**
 * `snix store daemon` as a process: listen-address handling, unix socket
 * rules, graceful shutdown with calls in flight, hostile bytes on the port,
 * remote import/export through the CLI, and a bounded load run.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import * as http2 from "node:http2";
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { BlobService as BlobServiceDesc } from "../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import { GrpcBlobService } from "../lib/grpc/blob_client.ts";
import { openGrpcChannel } from "../lib/grpc/transport.ts";
import { run, snix, startDaemon } from "./grpc_helpers.ts";
import {
  pseudoRandom as randomBytes,
  readAll,
} from "../lib/castore/_test_blob_service.ts";

const dec = new TextDecoder();

async function putBlob(
  blobs: GrpcBlobService,
  data: Uint8Array,
): Promise<Uint8Array> {
  const w = blobs.put();
  for (let o = 0; o < data.length; o += 200_000) {
    await w.write(data.subarray(o, o + 200_000));
  }
  return await w.close();
}

function sha256hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function tcpUrl(addr: string): string {
  return `grpc+http://${addr}`;
}

async function withTmp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "snix-grpcd-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("store daemon: bad listen address and unix socket rules", async () => {
  await withTmp(async (tmp) => {
    const bad = await snix([
      "--data-dir",
      `${tmp}/d`,
      "store",
      "daemon",
      "--listen-address",
      "localhost",
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expected host:port/);
    assert.doesNotMatch(bad.stderr, /\n\s+at /, "no stack trace");

    // A port in use.
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, "127.0.0.1", () => r()));
    const usedPort = (holder.address() as net.AddressInfo).port;
    const inUse = await snix([
      "--data-dir",
      `${tmp}/d`,
      "store",
      "daemon",
      "-l",
      `127.0.0.1:${usedPort}`,
    ]);
    await new Promise<void>((r) => holder.close(() => r()));
    assert.equal(inUse.code, 1);
    assert.match(
      inUse.stderr,
      /cannot listen on 127\.0\.0\.1:\d+: address already in use/,
    );
    assert.equal(inUse.stderr.trim().split("\n").length, 1, inUse.stderr);

    // A stale socket file (bound, never unlinked).
    const sock = `${tmp}/stale.sock`;
    const py = await run("/usr/bin/python3", [
      "-c",
      `import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])`,
      sock,
    ]);
    assert.equal(py.code, 0, py.stderr);
    assert.ok(statSync(sock).isSocket());
    const refused = await snix([
      "--data-dir",
      `${tmp}/d`,
      "store",
      "daemon",
      "-l",
      `unix:${sock}`,
    ]);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /stale socket file exists.*--unix-listen-unlink/,
    );
    const d = await startDaemon(["--data-dir", `${tmp}/d`], [
      "-l",
      `unix:${sock}`,
      "--unix-listen-unlink",
    ]);
    try {
      assert.equal(statSync(sock).mode & 0o777, 0o660);
      // A second daemon on the live socket refuses even with --unix-listen-unlink.
      const busy = await snix([
        "--data-dir",
        `${tmp}/d`,
        "store",
        "daemon",
        "-l",
        `unix:${sock}`,
        "--unix-listen-unlink",
      ]);
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, /another process is listening/);
    } finally {
      assert.equal(await d.stop(), 0);
    }
    // A regular file is never replaced.
    await Deno.writeTextFile(`${tmp}/file.sock`, "x");
    const notSock = await snix([
      "--data-dir",
      `${tmp}/d`,
      "store",
      "daemon",
      "-l",
      `unix:${tmp}/file.sock`,
      "--unix-listen-unlink",
    ]);
    assert.equal(notSock.code, 1);
    assert.match(notSock.stderr, /not a socket/);
    assert.equal(await Deno.readTextFile(`${tmp}/file.sock`), "x");
  });
});

Deno.test("store daemon: SIGTERM lets an in-flight Read finish, refuses new connections, exits 0", async () => {
  await withTmp(async (tmp) => {
    const d = await startDaemon(["--data-dir", `${tmp}/d`], [
      "-l",
      "127.0.0.1:0",
    ]);
    const url = tcpUrl(d.addresses[0]);
    const blobs = GrpcBlobService.connect(url);
    const channel = openGrpcChannel(url);
    try {
      const data = randomBytes(24 << 20, 5);
      const digest = await putBlob(blobs, data);
      // One Read call streaming the whole blob (the server assembles its chunks).
      const raw = createClient(BlobServiceDesc, channel.transport);
      const it = raw.read({ digest })[Symbol.asyncIterator]();
      const first = await it.next();
      assert.ok(!first.done);
      const exited = d.stop("SIGTERM");
      await new Promise((r) => setTimeout(r, 300));
      // New connections are refused while the old call drains.
      const late = GrpcBlobService.connect(url);
      await assert.rejects(
        late.has(digest),
        (e: unknown) =>
          e instanceof ConnectError && e.code === Code.Unavailable,
      );
      await late.close();
      const hash = createHash("sha256").update(first.value.data);
      let n = first.value.data.length;
      while (true) {
        const r = await it.next();
        if (r.done) break;
        hash.update(r.value.data);
        n += r.value.data.length;
      }
      assert.equal(n, data.length);
      assert.equal(hash.digest("hex"), sha256hex(data));
      assert.equal(await exited, 0, d.stderr());
      assert.match(d.stderr(), /SIGTERM: finishing in-flight calls/);
    } finally {
      channel.close();
      await blobs.close();
      await d.stop("SIGKILL");
    }
  });
});

Deno.test("store daemon: a call that never ends is cancelled after --shutdown-grace", async () => {
  await withTmp(async (tmp) => {
    const d = await startDaemon(["--data-dir", `${tmp}/d`], [
      "-l",
      "127.0.0.1:0",
      "--shutdown-grace",
      "1",
    ]);
    const blobs = GrpcBlobService.connect(tcpUrl(d.addresses[0]));
    try {
      const w = blobs.put();
      await w.write(randomBytes(100_000, 3));
      // Make sure the call reached the daemon before stopping it.
      assert.equal(await blobs.has(new Uint8Array(32)), false);
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      assert.equal(await d.stop("SIGTERM"), 0, d.stderr());
      const took = Date.now() - t0;
      assert.ok(took >= 900 && took < 5000, `exit after ${took} ms`);
      assert.match(d.stderr(), /still busy after 1000 ms; cancelling/);
      await assert.rejects(w.close(), ConnectError);
    } finally {
      await blobs.close();
    }
  });
});

/** Sends raw bytes to a TCP port and waits until the peer closes (or 2 s). */
function sendRaw(port: number, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(bytes));
    const done = () => {
      s.destroy();
      resolve();
    };
    s.on("error", done);
    s.on("close", done);
    setTimeout(done, 2000);
  });
}

/** Opens a Put over raw HTTP/2, sends part of a message, then kills the connection or resets the stream. */
function truncatedPut(port: number, how: "destroy" | "reset"): Promise<void> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": "/snix.castore.v1.BlobService/Put",
      "content-type": "application/grpc",
      "te": "trailers",
    });
    stream.on("error", () => {});
    // A message header announcing 1 MiB, followed by only 1000 bytes.
    const header = new Uint8Array([0, 0, 0x10, 0, 0]);
    stream.write(header);
    stream.write(new Uint8Array(1000), () => {
      setTimeout(() => {
        if (how === "reset") stream.close(http2.constants.NGHTTP2_CANCEL);
        session.destroy();
        resolve();
      }, 50);
    });
  });
}

Deno.test("store daemon: garbage bytes and truncated HTTP/2 streams do not disturb other clients", async () => {
  await withTmp(async (tmp) => {
    const d = await startDaemon(["--data-dir", `${tmp}/d`], [
      "-l",
      "127.0.0.1:0",
    ]);
    const url = tcpUrl(d.addresses[0]);
    const port = Number(d.addresses[0].split(":").pop());
    const blobs = GrpcBlobService.connect(url);
    try {
      const data = randomBytes(3 << 20, 9);
      const digest = await putBlob(blobs, data);
      // A read in progress on a healthy connection while the port is abused.
      const reading = readAll(await blobs.read(digest));
      await Promise.all([
        sendRaw(port, randomBytes(4096, 1)),
        sendRaw(
          port,
          new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
        sendRaw(
          port,
          new TextEncoder().encode(
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\xff".repeat(100),
          ),
        ),
        truncatedPut(port, "destroy"),
        truncatedPut(port, "reset"),
        sendRaw(port, new Uint8Array()),
      ]);
      assert.deepEqual(sha256hex(await reading), sha256hex(data));
      // Still serving, on old and new connections.
      assert.equal(await blobs.has(digest), true);
      const fresh = GrpcBlobService.connect(url);
      assert.deepEqual(
        sha256hex(await readAll(await fresh.read(digest))),
        sha256hex(data),
      );
      await fresh.close();
      assert.equal(d.proc.pid > 0, true);
    } finally {
      await blobs.close();
      assert.equal(await d.stop(), 0, d.stderr());
    }
  });
});

Deno.test("store daemon: snix --remote import, then export equals nix-store --dump", async () => {
  await withTmp(async (tmp) => {
    // A small tree with a big file (several chunks), an executable and a symlink.
    const src = `${tmp}/src`;
    await Deno.mkdir(`${src}/sub`, { recursive: true });
    await Deno.writeFile(`${src}/big.bin`, randomBytes(3 << 20, 77));
    await Deno.writeTextFile(`${src}/sub/run.sh`, "#!/bin/sh\necho hi\n");
    await Deno.chmod(`${src}/sub/run.sh`, 0o755);
    await Deno.symlink("sub/run.sh", `${src}/link`);
    const sock = `${tmp}/d.sock`;
    const d = await startDaemon(["--data-dir", `${tmp}/data`], [
      "-l",
      "127.0.0.1:0",
      "-l",
      `unix:${sock}`,
    ]);
    try {
      const imp = await snix([
        "--remote",
        tcpUrl(d.addresses[0]),
        "store",
        "import",
        src,
      ]);
      assert.equal(imp.code, 0, imp.stderr);
      const storePath = dec.decode(imp.stdout).trim().split("\n").pop()!;
      assert.match(storePath, /^\/nix\/store\/[0-9a-z]{32}-src$/);
      const exp = await snix([
        "--remote",
        `grpc+unix://${sock}`,
        "store",
        "export",
        storePath,
      ]);
      assert.equal(exp.code, 0, exp.stderr);
      const dump = await run("nix-store", ["--dump", src]);
      assert.equal(dump.code, 0, dump.stderr);
      assert.equal(sha256hex(exp.stdout), sha256hex(dump.stdout));
      // A missing path is a one-line error, not a stack trace.
      const missing = await snix([
        "--remote",
        `grpc+unix://${sock}`,
        "store",
        "export",
        "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-nope",
      ]);
      assert.notEqual(missing.code, 0);
      assert.equal(missing.stderr.trim().split("\n").length, 1, missing.stderr);
    } finally {
      assert.equal(await d.stop(), 0, d.stderr());
    }
    // A daemon that is not there: a clear error naming the address.
    const down = await snix([
      "--remote",
      `grpc+unix://${sock}`,
      "store",
      "export",
      "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x",
    ]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /grpc\+unix:\/\//);
    assert.equal(down.stderr.trim().split("\n").length, 1, down.stderr);
  });
});

function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(status.match(/VmRSS:\s+(\d+) kB/)![1]);
}

Deno.test("store daemon: 32 concurrent clients read and write for 10 s, no error, no lost write, RSS bounded", async () => {
  await withTmp(async (tmp) => {
    const d = await startDaemon(["--data-dir", `${tmp}/d`], [
      "-l",
      "127.0.0.1:0",
    ]);
    const url = tcpUrl(d.addresses[0]);
    const written: { digest: Uint8Array; sha: string; size: number }[] = [];
    const errors: unknown[] = [];
    let reads = 0;
    let maxRss = 0;
    const until = Date.now() + 10_000;
    const sampler = setInterval(() => {
      try {
        maxRss = Math.max(maxRss, rssKiB(d.pid));
      } catch { /* exited */ }
    }, 200);
    try {
      await Promise.all(Array.from({ length: 32 }, async (_, i) => {
        const client = GrpcBlobService.connect(url);
        try {
          let seq = 0;
          while (Date.now() < until) {
            seq++;
            if (i % 2 === 0 || written.length === 0) {
              const size = ((i * 7919 + seq * 104729) % (1 << 20)) + 1;
              const data = randomBytes(size, i * 1000 + seq);
              const digest = await putBlob(client, data);
              written.push({ digest, sha: sha256hex(data), size });
            } else {
              const w = written[(i * 31 + seq) % written.length];
              const got = await readAll(await client.read(w.digest));
              assert.equal(got.length, w.size);
              assert.equal(sha256hex(got), w.sha);
              reads++;
            }
          }
        } catch (e) {
          errors.push(e);
        } finally {
          await client.close();
        }
      }));
      clearInterval(sampler);
      assert.deepEqual(errors, []);
      // No lost write: every blob written reads back whole, through a fresh connection.
      const check = GrpcBlobService.connect(url);
      for (const w of written) {
        assert.equal(
          sha256hex(await readAll(await check.read(w.digest))),
          w.sha,
        );
      }
      await check.close();
      console.log(
        `load: ${written.length} writes, ${reads} reads, daemon max RSS ${
          Math.round(maxRss / 1024)
        } MiB`,
      );
      assert.ok(
        written.length >= 16 && reads >= 16,
        `too little work: ${written.length} writes, ${reads} reads`,
      );
      assert.ok(maxRss < 768 * 1024, `daemon RSS ${maxRss} KiB`);
    } finally {
      clearInterval(sampler);
      assert.equal(await d.stop(), 0, d.stderr());
    }
  });
});
