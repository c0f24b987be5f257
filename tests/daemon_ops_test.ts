/**
 * The nix-daemon in process (memory services) driven by our own protocol
 * client: every op gets an answer and leaves the connection usable; faults
 * (random bytes, huge lengths, truncated frames, vanishing clients, wrong
 * hashes, missing references) drop at most the offending connection and
 * record nothing; old protocol versions (inline NAR, STDERR_READ tunnel).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connect } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBlobService } from "../lib/castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../lib/castore/memory_directory_service.ts";
import { MemoryPathInfoService } from "../lib/store/memory_path_info_service.ts";
import { encodeBase16, makeHash } from "../lib/nix/hash.ts";
import { encodeNixBase32 } from "../lib/nix/nixbase32.ts";
import {
  makeFixedOutputPath,
  makeSourcePath,
  makeTextPath,
  type StorePath,
} from "../lib/nix/store_path.ts";
import { DaemonClient, DaemonReplyError } from "../lib/daemon/client.ts";
import { CACHE_TTL_MS } from "../lib/daemon/store.ts";
import { fromNixPathInfo, toNixPathInfo } from "../lib/store/path_info.ts";
import { listenUnix, type RunningDaemon } from "../lib/daemon/server.ts";
import {
  BuildStatus,
  FramedSink,
  Limits,
  Op,
  readKeyedBuildResult,
  readStderr,
  readUnkeyedValidPathInfo,
  readValidPathInfo,
  WireReader,
  type WireWriter,
  writeValidPathInfo,
} from "../lib/wire/mod.ts";

// --- helpers ---------------------------------------------------------------

function narOfFile(contents: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const str = (b: Uint8Array | string) => {
    const bytes = typeof b === "string" ? new TextEncoder().encode(b) : b;
    const len = new Uint8Array(8);
    new DataView(len.buffer).setUint32(0, bytes.length, true);
    parts.push(len, bytes, new Uint8Array((8 - (bytes.length % 8)) % 8));
  };
  for (const s of ["nix-archive-1", "(", "type", "regular", "contents"]) str(s);
  str(contents);
  str(")");
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

interface TestPath {
  path: StorePath;
  nar: Uint8Array;
  narHash: Uint8Array;
  refs: StorePath[];
}

function sourcePath(
  name: string,
  text: string,
  refs: StorePath[] = [],
): TestPath {
  const nar = narOfFile(new TextEncoder().encode(text));
  const narHash = new Uint8Array(createHash("sha256").update(nar).digest());
  return { path: makeSourcePath(narHash, name, refs), nar, narHash, refs };
}

function infoArgs(
  w: WireWriter,
  p: TestPath,
  overrides: { narHash?: Uint8Array; narSize?: number } = {},
) {
  w.string(p.path.toString()).string("").string(
    encodeBase16(overrides.narHash ?? p.narHash),
  );
  w.stringSet(p.refs.map((r) => r.toString())).u64(0).u64(
    overrides.narSize ?? p.nar.length,
  );
  w.bool(false).strings([]).string(
    `fixed:r:sha256:${encodeNixBase32(p.narHash)}`,
  );
}

async function addNar(
  c: DaemonClient,
  p: TestPath,
  overrides: { narHash?: Uint8Array; narSize?: number } = {},
) {
  c.w.u64(Op.AddToStoreNar);
  infoArgs(c.w, p, overrides);
  c.w.bool(false).bool(true);
  const sink = new FramedSink(c.w, 100);
  await sink.write(p.nar);
  await sink.close();
  await c.processStderr();
}

interface Env {
  daemon: RunningDaemon;
  sock: string;
  logs: string[];
  dir: string;
  pathInfos: MemoryPathInfoService;
}

async function withDaemon(fn: (e: Env) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), "snix-daemon-ops-"));
  const sock = join(dir, "sock");
  const logs: string[] = [];
  const pathInfos = new MemoryPathInfoService();
  const daemon = await listenUnix(sock, {
    services: {
      blobs: new MemoryBlobService(),
      directories: new MemoryDirectoryService(),
      pathInfos,
    },
    daemonVersion: "test",
    log: (l) => void logs.push(l),
  });
  try {
    await fn({ daemon, sock, logs, dir, pathInfos });
  } finally {
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Sends raw bytes on a fresh socket; resolves with what came back when the daemon closed it. */
function rawExchange(
  sock: string,
  bytes: Uint8Array,
  keepOpen = false,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    const got: Uint8Array[] = [];
    s.on("data", (b) => got.push(new Uint8Array(b)));
    s.on("error", reject);
    s.on("close", () => resolve(Uint8Array.from(got.flatMap((g) => [...g]))));
    s.on("connect", () => {
      s.write(bytes);
      if (!keepOpen) s.end();
      else setTimeout(() => s.destroy(), 80);
    });
  });
}

async function usable(c: DaemonClient, p: TestPath) {
  assert.equal(
    await c.isValidPath(p.path.toString()),
    true,
    "connection still usable",
  );
}

// --- tests -----------------------------------------------------------------

Deno.test("daemon ops: every op is answered and the connection stays usable", async () => {
  await withDaemon(async ({ sock }) => {
    const a = sourcePath("a", "hello");
    const b = sourcePath("b", "world", [a.path]);
    const c = await DaemonClient.connect(sock, 38, [
      "realisation-with-path-not-hash",
    ]);
    assert.equal(c.version.minor, 38);
    assert.deepEqual([...c.version.features], [
      "realisation-with-path-not-hash",
    ]);
    assert.equal(c.daemonVersion, "test");
    await addNar(c, a);
    await addNar(c, b);
    const A = a.path.toString(), B = b.path.toString();
    const missing = sourcePath("missing", "nope").path.toString();
    const r = c.r;
    const paths = () => r.readStrings(Limits.count, Limits.path);
    // [op, args, reply reader or an expected error]
    const table: [
      string,
      number,
      (w: WireWriter) => void,
      ((r: WireReader) => Promise<unknown>) | RegExp,
    ][] = [
      [
        "IsValidPath",
        Op.IsValidPath,
        (w) => w.string(A),
        async () => assert.equal(await r.readBool(), true),
      ],
      [
        "QueryValidPaths",
        Op.QueryValidPaths,
        (w) => w.strings([A, missing]).bool(false),
        async () => assert.deepEqual(await paths(), [A]),
      ],
      ["QueryPathInfo", Op.QueryPathInfo, (w) => w.string(B), async () => {
        assert.equal(await r.readBool(), true);
        const info = await readUnkeyedValidPathInfo(r, c.version);
        assert.deepEqual(info.references, [A]);
        assert.equal(info.narHash, encodeBase16(b.narHash));
      }],
      [
        "QueryPathInfo missing",
        Op.QueryPathInfo,
        (w) => w.string(missing),
        async () => assert.equal(await r.readBool(), false),
      ],
      [
        "QueryPathFromHashPart",
        Op.QueryPathFromHashPart,
        (w) => w.string(a.path.hashPart),
        async () => assert.equal(await r.readString(4096), A),
      ],
      [
        "QueryPathFromHashPart unknown",
        Op.QueryPathFromHashPart,
        (w) => w.string("0".repeat(32)),
        async () => assert.equal(await r.readString(4096), ""),
      ],
      [
        "QueryReferrers",
        Op.QueryReferrers,
        (w) => w.string(A),
        async () => assert.deepEqual(await paths(), [B]),
      ],
      [
        "QueryValidDerivers",
        Op.QueryValidDerivers,
        (w) => w.string(A),
        async () => assert.deepEqual(await paths(), []),
      ],
      [
        "QueryAllValidPaths",
        Op.QueryAllValidPaths,
        () => {},
        async () => assert.deepEqual(await paths(), [A, B].sort()),
      ],
      [
        "QueryRealisation",
        Op.QueryRealisation,
        (w) => w.string(`${A}.drv`).string("out"),
        async () => assert.equal(await r.readNumber(), 0),
      ],
      [
        "QueryDerivationOutputMap",
        Op.QueryDerivationOutputMap,
        (w) => w.string(A),
        /invalid derivation/,
      ],
      [
        "QueryMissing",
        Op.QueryMissing,
        (w) => w.strings([A, missing]),
        async () => {
          assert.deepEqual(await paths(), []);
          assert.deepEqual(await paths(), []);
          assert.deepEqual(await paths(), [missing]);
          await r.readNumber();
          await r.readNumber();
        },
      ],
      [
        "QuerySubstitutablePaths",
        Op.QuerySubstitutablePaths,
        (w) => w.strings([A]),
        async () => assert.deepEqual(await paths(), []),
      ],
      [
        "QuerySubstitutablePathInfo",
        Op.QuerySubstitutablePathInfo,
        (w) => w.string(A),
        async () => assert.equal(await r.readNumber(), 0),
      ],
      [
        "QuerySubstitutablePathInfos",
        Op.QuerySubstitutablePathInfos,
        (w) => w.stringMap([[A, ""]]),
        async () => assert.equal(await r.readNumber(), 0),
      ],
      [
        "NarFromPath",
        Op.NarFromPath,
        (w) => w.string(B),
        async () => assert.deepEqual(await r.readExact(b.nar.length), b.nar),
      ],
      [
        "NarFromPath missing",
        Op.NarFromPath,
        (w) => w.string(missing),
        /is not valid/,
      ],
      [
        "AddTextToStore",
        Op.AddTextToStore,
        (w) => w.string("t").string(`see ${A}`).strings([A]),
        async () => {
          const expected = makeTextPath(
            createHash("sha256").update(`see ${A}`).digest(),
            "t",
            [a.path],
          );
          assert.equal(await r.readString(4096), expected.toString());
        },
      ],
      [
        "AddToStore text (1.25+ framed)",
        Op.AddToStore,
        (w) => {
          w.string("t2").string("text:sha256").strings([A]).bool(false);
          w.u64(5).raw(new TextEncoder().encode("hello")).u64(0);
        },
        async () => {
          const expected = makeTextPath(
            createHash("sha256").update("hello").digest(),
            "t2",
            [a.path],
          );
          const info = await readValidPathInfo(r, c.version);
          assert.equal(info.path, expected.toString());
          assert.deepEqual(info.references, [A]);
          assert.match(info.ca, /^text:sha256:/);
        },
      ],
      [
        "AddToStore flat (1.25+ framed)",
        Op.AddToStore,
        (w) => {
          w.string("flat").string("fixed:sha256").strings([]).bool(false);
          w.u64(3).raw(new Uint8Array([1, 2, 3])).u64(0);
        },
        async () => {
          const h = createHash("sha256").update(new Uint8Array([1, 2, 3]))
            .digest();
          const expected = makeFixedOutputPath(
            "flat",
            makeHash("sha256", h),
            false,
          );
          const info = await readValidPathInfo(r, c.version);
          assert.equal(info.path, expected.toString());
          assert.equal(info.ca, `fixed:sha256:${encodeNixBase32(h)}`);
          assert.equal(
            info.narHash,
            encodeBase16(
              createHash("sha256").update(narOfFile(new Uint8Array([1, 2, 3])))
                .digest(),
            ),
          );
        },
      ],
      [
        "AddToStore NAR (1.25+ framed)",
        Op.AddToStore,
        (w) => {
          w.string("a").string("fixed:r:sha256").strings([]).bool(false);
          w.u64(a.nar.length).raw(a.nar).u64(0);
        },
        async () =>
          assert.equal((await readValidPathInfo(r, c.version)).path, A),
      ],
      [
        "AddToStore bad method",
        Op.AddToStore,
        (w) => {
          w.string("x").string("fixed:r:sha999").strings([]).bool(false);
          w.u64(3).raw(new Uint8Array([1, 2, 3])).u64(0);
        },
        /invalid hash algorithm/,
      ],
      [
        "AddSignatures",
        Op.AddSignatures,
        (w) => w.string(A).strings(["k:" + "A".repeat(86) + "=="]),
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "EnsurePath",
        Op.EnsurePath,
        (w) => w.string(A),
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "EnsurePath missing",
        Op.EnsurePath,
        (w) => w.string(missing),
        /not valid and this daemon does not build/,
      ],
      [
        "BuildPaths",
        Op.BuildPaths,
        (w) => w.strings([A]).u64(0),
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "BuildPaths missing",
        Op.BuildPaths,
        (w) => w.strings([missing]).u64(0),
        /does not build/,
      ],
      [
        "BuildPathsWithResults",
        Op.BuildPathsWithResults,
        (w) => w.strings([A, missing]).u64(0),
        async () => {
          assert.equal(await r.readNumber(), 2);
          const x = await readKeyedBuildResult(r, c.version);
          const y = await readKeyedBuildResult(r, c.version);
          assert.equal(x.status, BuildStatus.AlreadyValid);
          assert.equal(y.status, BuildStatus.MiscFailure);
          assert.match(y.errorMsg, /does not build/);
        },
      ],
      ["BuildDerivation", Op.BuildDerivation, (w) => {
        w.string(`${A}.drv`).u64(1).string("out").string(A).string("").string(
          "",
        );
        w.strings([]).string("x86_64-linux").string("/bin/sh").strings([
          "-c",
          "true",
        ]).u64(1).string("k").string("v").u64(0);
      }, /does not build; use it as the lower store of a local-overlay store/],
      [
        "AddTempRoot",
        Op.AddTempRoot,
        (w) => w.string(A),
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "AddIndirectRoot",
        Op.AddIndirectRoot,
        (w) => w.string("/tmp/root"),
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "AddPermRoot",
        Op.AddPermRoot,
        (w) => w.string(A).string("/tmp/root"),
        /keeps no root links/,
      ],
      [
        "SyncWithGC",
        Op.SyncWithGC,
        () => {},
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "FindRoots",
        Op.FindRoots,
        () => {},
        async () => assert.equal(await r.readNumber(), 0),
      ],
      [
        "CollectGarbage",
        Op.CollectGarbage,
        (w) => w.u64(2).strings([]).bool(false).u64(0).u64(0).u64(0).u64(0),
        async () => {
          assert.deepEqual(await paths(), []);
          assert.equal(await r.readNumber(), 0);
          assert.equal(await r.readNumber(), 0);
        },
      ],
      [
        "CollectGarbage specific",
        Op.CollectGarbage,
        (w) => w.u64(3).strings([A]).bool(false).u64(0).u64(0).u64(0).u64(0),
        /never deletes/,
      ],
      [
        "OptimiseStore",
        Op.OptimiseStore,
        () => {},
        async () => assert.equal(await r.readNumber(), 1),
      ],
      [
        "VerifyStore",
        Op.VerifyStore,
        (w) => w.bool(true).bool(false),
        async () => assert.equal(await r.readBool(), false),
      ],
      ["SetOptions", Op.SetOptions, (w) => {
        for (let i = 0; i < 12; i++) w.u64(0);
        w.stringMap([["cores", "2"]]);
      }, () => Promise.resolve()],
      [
        "RegisterDrvOutput",
        Op.RegisterDrvOutput,
        (w) => w.string(`${A}.drv`).string("out").string(A).strings([]),
        /keeps no realisations/,
      ],
      [
        "AddBuildLog",
        Op.AddBuildLog,
        (w) => w.string(A).u64(3).raw(new Uint8Array([1, 2, 3])).u64(0),
        /keeps no build logs/,
      ],
      ["unknown op 999", 999, () => {}, /op 999 is not supported/],
    ];
    for (const [name, op, args, expect] of table) {
      c.w.u64(op);
      args(c.w);
      await c.w.flush();
      if (expect instanceof RegExp) {
        await assert.rejects(c.processStderr(), (e) => {
          assert.ok(e instanceof DaemonReplyError, name);
          assert.match(e.message, expect, name);
          return true;
        });
      } else {
        await c.processStderr().catch((e) =>
          assert.fail(`${name}: ${e.message}`)
        );
        await expect(r);
      }
      await usable(c, a);
    }
    // AddSignatures took effect.
    assert.equal((await c.queryPathInfo(A))!.sigs.length, 1);
    c.close();
  });
});

Deno.test("daemon ops: AddMultipleToStore records a batch in any order; a missing reference is refused", async () => {
  await withDaemon(async ({ sock }) => {
    const a = sourcePath("a", "one");
    const b = sourcePath("b", "two", [a.path]);
    const orphan = sourcePath("orphan", "three", [
      sourcePath("gone", "x").path,
    ]);
    const c = await DaemonClient.connect(sock, 34);
    const send = async (items: TestPath[]) => {
      c.w.u64(Op.AddMultipleToStore).bool(false).bool(true);
      const { w: inner, bytes } = (await import("../lib/wire/test_util.ts"))
        .collectingWriter();
      inner.u64(items.length);
      for (const p of items) {
        writeValidPathInfo(inner, { minor: 16, features: new Set() }, {
          path: p.path.toString(),
          deriver: "",
          narHash: encodeBase16(p.narHash),
          references: p.refs.map(String),
          registrationTime: 0,
          narSize: p.nar.length,
          ultimate: false,
          sigs: [],
          ca: "",
        });
        inner.raw(p.nar);
      }
      await inner.flush();
      const sink = new FramedSink(c.w, 77);
      await sink.write(bytes());
      await sink.close();
      await c.processStderr();
    };
    await send([b, a]); // b first: it waits for a in the same batch
    assert.equal(await c.isValidPath(b.path.toString()), true);
    assert.equal(await c.isValidPath(a.path.toString()), true);
    await assert.rejects(send([orphan]), /reference .*-gone is not valid/);
    assert.equal(await c.isValidPath(orphan.path.toString()), false);
    // Reading it back: the NAR and the info.
    const info = await c.queryPathInfo(b.path.toString());
    assert.deepEqual(info!.references, [a.path.toString()]);
    c.close();
  });
});

Deno.test("daemon faults: wrong hash or size is refused and not recorded; the connection goes on", async () => {
  await withDaemon(async ({ sock }) => {
    const a = sourcePath("a", "payload");
    const c = await DaemonClient.connect(sock, 34);
    await assert.rejects(
      addNar(c, a, { narHash: new Uint8Array(32) }),
      /refusing .*-a: .*(hash|mismatch)/i,
    );
    assert.equal(await c.isValidPath(a.path.toString()), false);
    await assert.rejects(
      addNar(c, a, { narSize: a.nar.length - 8 }),
      /refusing .*-a/,
    );
    assert.equal(await c.isValidPath(a.path.toString()), false);
    // A content address that does not yield the path is refused too.
    const liar = { ...a, path: sourcePath("liar", "other contents").path };
    await assert.rejects(
      addNar(c, liar),
      /content address fixed:r:sha256:.* yields .*-liar, not this path/,
    );
    assert.equal(await c.isValidPath(liar.path.toString()), false);
    const refd = sourcePath("r", "x", [sourcePath("nothere", "y").path]);
    await assert.rejects(addNar(c, refd), /reference .*-nothere is not valid/);
    await addNar(c, a);
    assert.equal(await c.isValidPath(a.path.toString()), true);
    c.close();
  });
});

Deno.test("daemon faults: random bytes, 2^60 lengths, truncated frames, a vanishing client", async () => {
  await withDaemon(async ({ sock, logs }) => {
    const a = sourcePath("a", "truncated");
    const good = await DaemonClient.connect(sock, 34);
    // 1. Random bytes instead of a handshake.
    const rnd = crypto.getRandomValues(new Uint8Array(64));
    await rawExchange(sock, rnd);
    // 2. A string length of 2^60 after a proper handshake.
    const hs = (await import("../lib/wire/test_util.ts")).encode;
    const handshake = await hs((w) =>
      w.u64(0x6e697863).u64(0x122).u64(0).u64(0)
    );
    const huge = await hs((w) =>
      w.raw(handshake).u64(Op.IsValidPath).u64(2n ** 60n)
    );
    const reply = await rawExchange(sock, huge);
    const rr = new WireReader(
      new ReadableStream({
        start(ctl) {
          ctl.enqueue(reply);
          ctl.close();
        },
      }),
    );
    await rr.readNumber(); // magic
    await rr.readNumber(); // version
    await rr.readString(100); // daemon version
    assert.equal(
      (await readStderr(rr, { minor: 34, features: new Set() })).type,
      "last",
    );
    const err = await readStderr(rr, { minor: 34, features: new Set() });
    assert.equal(err.type, "error");
    assert.match(
      (err as { error: { message: string } }).error.message,
      /store path length 1152921504606846976 is out of range/,
    );
    // 3. A frame length of 2^60 inside AddToStoreNar, and 4. a truncated frame then a vanishing client.
    for (
      const tail of [
        (w: WireWriter) => w.u64(2n ** 60n),
        (w: WireWriter) => w.u64(a.nar.length).raw(a.nar.subarray(0, 40)),
      ]
    ) {
      const bytes = await hs((w) => {
        w.raw(handshake).u64(Op.AddToStoreNar);
        infoArgs(w, a);
        w.bool(false).bool(true);
        tail(w);
      });
      await rawExchange(sock, bytes);
    }
    // 5. A client that vanishes in the middle of an AddMultipleToStore NAR.
    const c2 = await DaemonClient.connect(sock, 34);
    c2.w.u64(Op.AddMultipleToStore).bool(false).bool(true).u64(200);
    c2.w.u64(1);
    await c2.w.flush();
    c2.close();
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(
      await good.isValidPath(a.path.toString()),
      false,
      "nothing recorded",
    );
    const c3 = await DaemonClient.connect(sock, 34);
    await addNar(c3, a);
    assert.equal(
      await good.isValidPath(a.path.toString()),
      true,
      "other connections keep working",
    );
    assert.ok(
      logs.some((l) => /handshake failed: protocol mismatch/.test(l)),
      logs.join("\n"),
    );
    assert.ok(
      logs.some((l) =>
        /frame length 1152921504606846976 is out of range/.test(l)
      ),
      logs.join("\n"),
    );
    assert.ok(logs.every((l) => !l.includes("\n")), "one line each");
    good.close();
    c3.close();
  });
});

Deno.test("daemon ops: old clients — 1.10 (no ultimate/sigs, errors for invalid paths), 1.20 inline NAR, 1.22 STDERR_READ", async () => {
  await withDaemon(async ({ sock }) => {
    const a = sourcePath("old", "from an old client");
    const b = sourcePath("tunnel", "through STDERR_READ");
    const c10 = await DaemonClient.connect(sock, 10);
    assert.equal(c10.version.minor, 10);
    await assert.rejects(c10.queryPathInfo(a.path.toString()), /is not valid/);
    // 1.20: the NAR follows the arguments inline.
    const c20 = await DaemonClient.connect(sock, 20);
    c20.w.u64(Op.AddToStoreNar);
    infoArgs(c20.w, a);
    c20.w.bool(false).bool(true).raw(a.nar);
    await c20.w.flush();
    await c20.processStderr();
    const info = await c10.queryPathInfo(a.path.toString());
    assert.equal(info!.narSize, a.nar.length);
    assert.deepEqual(info!.sigs, []); // not sent before 1.16
    // 1.22: the daemon asks for the NAR with STDERR_READ.
    const c22 = await DaemonClient.connect(sock, 22);
    c22.w.u64(Op.AddToStoreNar);
    infoArgs(c22.w, b);
    c22.w.bool(false).bool(true);
    await c22.w.flush();
    let sent = 0;
    for (;;) {
      const m = await readStderr(c22.r, c22.version);
      if (m.type === "last") break;
      assert.equal(m.type, "read");
      const n = Math.min(
        (m as { length: number }).length,
        13,
        b.nar.length - sent,
      );
      c22.w.bytes(b.nar.subarray(sent, sent + n));
      sent += n;
      await c22.w.flush();
    }
    assert.equal(sent, b.nar.length);
    assert.equal(await c10.isValidPath(b.path.toString()), true);
    // 1.10 QueryValidPaths etc. still work; the ValidPathInfo reader at 1.16 matches what 1.20 sent.
    void readValidPathInfo;
    // 1.20 AddToStore (old form): the NAR follows inline; flat hashing takes the file out of it.
    for (
      const [recursive, expected] of [
        [1, a.path.toString()],
        [
          0,
          makeFixedOutputPath(
            "old",
            makeHash(
              "sha256",
              createHash("sha256").update("from an old client").digest(),
            ),
            false,
          ).toString(),
        ],
      ] as const
    ) {
      c20.w.u64(Op.AddToStore).string("old").bool(true).u64(recursive).string(
        "sha256",
      ).raw(a.nar);
      await c20.w.flush();
      await c20.processStderr();
      assert.equal(await c20.r.readString(4096), expected);
    }
    for (const c of [c10, c20, c22]) c.close();
  });
});

Deno.test("daemon ops: --read-only refuses every write with a clear error; reads and the connection go on", async () => {
  const dir = mkdtempSync(join(tmpdir(), "snix-daemon-ro-"));
  const sock = join(dir, "sock");
  const services = {
    blobs: new MemoryBlobService(),
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  };
  const a = sourcePath("a", "read-only");
  // Fill the store through a writable daemon first.
  const rw = await listenUnix(sock, {
    services,
    daemonVersion: "t",
    log: () => {},
  });
  const c0 = await DaemonClient.connect(sock, 34);
  await addNar(c0, a);
  c0.close();
  await rw.close();
  const ro = await listenUnix(sock, {
    services,
    daemonVersion: "t",
    log: () => {},
    readOnly: true,
  });
  try {
    const c = await DaemonClient.connect(sock, 34);
    const b = sourcePath("b", "refused");
    await assert.rejects(addNar(c, b), /read-only/);
    await assert.rejects(
      c.call(Op.AddTextToStore, (w) => w.string("t").string("x").strings([])),
      /read-only/,
    );
    await assert.rejects(
      c.call(
        Op.AddSignatures,
        (w) => w.string(a.path.toString()).strings(["k:AAAA"]),
      ),
      /read-only/,
    );
    assert.equal(await c.isValidPath(b.path.toString()), false);
    assert.equal(
      (await c.queryPathInfo(a.path.toString()))!.narSize,
      a.nar.length,
    );
    c.close();
  } finally {
    await ro.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("daemon ops: many connections at once", async () => {
  await withDaemon(async ({ sock }) => {
    const paths = Array.from(
      { length: 8 },
      (_, i) => sourcePath(`p${i}`, `contents ${i}`.repeat(100 * i)),
    );
    const clients = await Promise.all(
      Array.from({ length: 16 }, () => DaemonClient.connect(sock, 34)),
    );
    // Half add paths while the other half query them, all interleaved.
    await Promise.all(clients.map(async (c, k) => {
      if (k < 8) await addNar(c, paths[k]);
      for (let i = 0; i < 50; i++) {
        const p = paths[(k + i) % 8];
        const info = await c.queryPathInfo(p.path.toString());
        if (info) assert.equal(info.narSize, p.nar.length);
      }
    }));
    for (const p of paths) {
      assert.equal(await clients[0].isValidPath(p.path.toString()), true);
    }
    for (const c of clients) c.close();
  });
});

Deno.test("daemon ops: QueryPathInfo's cache follows writes (ours at once, new paths at once, other writers' within the TTL) and each client version gets its own encoding", async () => {
  await withDaemon(async ({ sock, pathInfos }) => {
    const a = sourcePath("cached", "cached contents");
    const b = sourcePath("elsewhere", "added by another writer");
    const c = await DaemonClient.connect(sock, 34);
    assert.equal(await c.queryPathInfo(a.path.toString()), undefined);
    await addNar(c, a);
    assert.deepEqual((await c.queryPathInfo(a.path.toString()))!.sigs, []);
    // Another writer of the same PathInfoService (another process on the
    // data directory) adds a signature to a and records b.
    const stored = (await pathInfos.get(a.path.digest))!;
    const sig = `other-1:${btoa(String.fromCharCode(...new Uint8Array(64)))}`;
    await pathInfos.put(
      fromNixPathInfo({ ...toNixPathInfo(stored), sigs: [sig] }, stored.entry!),
    );
    assert.equal(await c.queryPathInfo(b.path.toString()), undefined);
    await pathInfos.put(
      fromNixPathInfo(
        { ...toNixPathInfo(stored), path: b.path, sigs: [] },
        stored.entry!,
      ),
    );
    assert.equal(
      (await c.queryPathInfo(b.path.toString()))!.narSize,
      a.nar.length,
      "a path recorded elsewhere is seen at once (misses are not cached)",
    );
    await new Promise((r) => setTimeout(r, CACHE_TTL_MS + 100));
    assert.deepEqual((await c.queryPathInfo(a.path.toString()))!.sigs, [sig]);
    // The same cached info, for a 1.15 client (no ultimate/sigs/ca) and
    // again for 1.34: each gets its version's encoding; both stay in step.
    const old = await DaemonClient.connect(sock, 15);
    const o = (await old.queryPathInfo(a.path.toString()))!;
    assert.deepEqual([o.sigs, o.ca, o.narSize], [[], "", a.nar.length]);
    await usable(old, a);
    assert.deepEqual((await c.queryPathInfo(a.path.toString()))!.sigs, [sig]);
    await usable(c, a);
    // Our own write (AddSignatures) is seen at once.
    await c.call(
      Op.AddSignatures,
      (w) => w.string(a.path.toString()).strings([sig.replace("other", "own")]),
    );
    assert.equal(await c.r.readNumber(), 1);
    assert.equal((await c.queryPathInfo(a.path.toString()))!.sigs.length, 2);
    // A cached hash part with another name is not that path.
    const renamed = `/nix/store/${a.path.hashPart}-other-name`;
    assert.equal(await c.queryPathInfo(renamed), undefined);
    assert.equal(await c.isValidPath(renamed), false);
    old.close();
    c.close();
  });
});

Deno.test("daemon ops: an existing socket file is replaced only with unlink; other files never; an impossible socket path is one clear error", async () => {
  const dir = mkdtempSync(join(tmpdir(), "snix-daemon-sock-"));
  const sock = join(dir, "sock");
  const services = {
    blobs: new MemoryBlobService(),
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  };
  try {
    const d1 = await listenUnix(sock, {
      services,
      daemonVersion: "t",
      log: () => {},
      mode: 0o600,
    });
    await assert.rejects(
      listenUnix(sock, { services, daemonVersion: "t", log: () => {} }),
      /already exists \(use --unix-listen-unlink/,
    );
    const d2 = await listenUnix(sock, {
      services,
      daemonVersion: "t",
      log: () => {},
      unlink: true,
    });
    await d2.close();
    await d1.close();
    const file = join(dir, "file");
    (await import("node:fs")).writeFileSync(file, "x");
    await assert.rejects(
      listenUnix(file, {
        services,
        daemonVersion: "t",
        log: () => {},
        unlink: true,
      }),
      /is not a socket; not removing it/,
    );
    // A socket path that cannot be: one line saying why.
    await assert.rejects(
      listenUnix(join(dir, "missing", "sock"), {
        services,
        daemonVersion: "t",
        log: () => {},
      }),
      /^Error: cannot listen on .*missing\/sock: directory .*missing does not exist$/,
    );
    await assert.rejects(
      listenUnix(join(file, "sock"), {
        services,
        daemonVersion: "t",
        log: () => {},
      }),
      /^Error: cannot listen on .*file\/sock: E[A-Z]+$/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("daemon faults: random arguments after every op number never take the daemon down", async () => {
  const fc = (await import("fast-check")).default;
  const { encode } = await import("../lib/wire/test_util.ts");
  await withDaemon(async ({ sock }) => {
    const a = sourcePath("a", "survivor");
    const good = await DaemonClient.connect(sock, 34);
    await addNar(good, a);
    const handshake = await encode((w) =>
      w.u64(0x6e697863).u64(0x126).u64(0).u64(0)
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 50 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.boolean(),
        async (op, junk, keepOpen) => {
          const bytes = await encode((w) => w.raw(handshake).u64(op).raw(junk));
          await rawExchange(sock, bytes, keepOpen);
          assert.equal(await good.isValidPath(a.path.toString()), true);
        },
      ),
      { numRuns: 40 },
    );
    good.close();
  });
});
