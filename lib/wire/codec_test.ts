import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type BuildResult,
  readBuildResult,
  writeBuildResult,
} from "./build_result.ts";
import {
  type ContentAddress,
  parseContentAddress,
  renderContentAddress,
} from "./content_address.ts";
import {
  type DerivedPath,
  parseDerivedPath,
  renderDerivedPath,
} from "./derived_path.ts";
import { FramedSink, framedSource } from "./framed.ts";
import { narCopy } from "./nar_copy.ts";
import {
  readValidPathInfo,
  type ValidPathInfo,
  writeValidPathInfo,
} from "./path_info.ts";
import {
  readOptionalUnkeyedRealisation,
  readRealisation,
  writeOptionalUnkeyedRealisation,
  writeRealisation,
} from "./realisation.ts";
import {
  readStderr,
  writeError,
  writeLast,
  writeNext,
  writeRead,
  writeResult,
  writeStartActivity,
  writeStopActivity,
} from "./stderr.ts";
import {
  collectingWriter,
  drainStream,
  encode,
  readerOf,
} from "./test_util.ts";
import { FEATURE_REALISATION_WITH_PATH, protocolVersion } from "./version.ts";

const NIX32 = "0123456789abcdfghijklmnpqrsvwxyz";
const hashPart = fc.string({
  unit: fc.constantFrom(...NIX32),
  minLength: 32,
  maxLength: 32,
});
const storePath = fc.tuple(
  hashPart,
  fc.stringMatching(/^[a-zA-Z0-9+._?=-]{1,20}$/),
).map(([h, n]) => `/nix/store/${h}-${n}`);
const uniqSorted = (a: string[]) => [...new Set(a)].sort();
const cuts = fc.array(fc.integer({ min: 1, max: 64 }), {
  minLength: 1,
  maxLength: 4,
});
const minor = fc.integer({ min: 10, max: 38 });

const pathInfo = fc.record({
  path: storePath,
  deriver: fc.oneof(fc.constant(""), storePath),
  narHash: fc.stringMatching(/^[0-9a-f]{64}$/),
  references: fc.array(storePath, { maxLength: 5 }).map(uniqSorted),
  registrationTime: fc.maxSafeNat(),
  narSize: fc.maxSafeNat(),
  ultimate: fc.boolean(),
  sigs: fc.array(fc.stringMatching(/^[a-z]{1,8}:[A-Za-z0-9+/]{4,20}$/), {
    maxLength: 3,
  }).map(uniqSorted),
  ca: fc.constantFrom(
    "",
    "fixed:r:sha256:1lr187v6dck1rjh2j6svpikcfz53wyl3qrlcbb405zlh13x0khhh",
  ),
}).map((x) => ({ ...x }));

Deno.test("codec: ValidPathInfo round-trips at every version 1.10 .. 1.38", async () => {
  await fc.assert(
    fc.asyncProperty(pathInfo, minor, cuts, async (info, m, c) => {
      const v = protocolVersion(m);
      const back = await readValidPathInfo(
        readerOf(await encode((w) => writeValidPathInfo(w, v, info)), c),
        v,
      );
      const expected: ValidPathInfo = m >= 16
        ? info
        : { ...info, ultimate: false, sigs: [], ca: "" };
      assert.deepEqual(back, expected);
    }),
  );
});

Deno.test("codec: BuildResult round-trips at every version, with and without the realisation feature", async () => {
  const result = fc.record({
    status: fc.integer({ min: 0, max: 14 }),
    errorMsg: fc.string({ maxLength: 30 }),
    timesBuilt: fc.nat(100),
    isNonDeterministic: fc.boolean(),
    startTime: fc.maxSafeNat(),
    stopTime: fc.maxSafeNat(),
    cpuUser: fc.option(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), {
      nil: undefined,
    }),
    cpuSystem: fc.option(fc.bigInt({ min: 0n, max: 2n ** 40n }), {
      nil: undefined,
    }),
    builtOutputs: fc.array(
      fc.tuple(fc.stringMatching(/^[a-z]{1,6}$/), storePath),
      { maxLength: 3 },
    ).map(
      (l) =>
        new Map(
          l.map(([n, p]) => [n, { outPath: p, signatures: [] as string[] }]),
        ),
    ),
  });
  await fc.assert(
    fc.asyncProperty(
      result,
      fc.integer({ min: 10, max: 38 }),
      fc.boolean(),
      async (res, m, feat) => {
        const v = protocolVersion(
          m,
          feat && m >= 38 ? [FEATURE_REALISATION_WITH_PATH] : [],
        );
        const back = await readBuildResult(
          readerOf(await encode((w) => writeBuildResult(w, v, res))),
          v,
        );
        const expected: BuildResult = {
          status: res.status,
          errorMsg: res.errorMsg,
          timesBuilt: m >= 29 ? res.timesBuilt : 0,
          isNonDeterministic: m >= 29 ? res.isNonDeterministic : false,
          startTime: m >= 29 ? res.startTime : 0,
          stopTime: m >= 29 ? res.stopTime : 0,
          builtOutputs: m >= 28 ? res.builtOutputs : new Map(),
        };
        if (m >= 37) {
          expected.cpuUser = res.cpuUser;
          expected.cpuSystem = res.cpuSystem;
        }
        assert.deepEqual(back, expected);
      },
    ),
  );
});

Deno.test("codec: realisations and optional realisations round-trip", async () => {
  const real = fc.record({
    drvPath: storePath,
    outputName: fc.stringMatching(/^[a-z]{1,6}$/),
    outPath: storePath,
    signatures: fc.array(fc.stringMatching(/^[a-z]{1,5}:[A-Za-z0-9]{4}$/), {
      maxLength: 3,
    }).map(uniqSorted),
  }).map((x) => ({ ...x }));
  await fc.assert(
    fc.asyncProperty(real, fc.boolean(), async (x, some) => {
      const bytes = await encode((w) => {
        writeRealisation(w, x);
        writeOptionalUnkeyedRealisation(w, some ? x : undefined);
      });
      const r = readerOf(bytes);
      assert.deepEqual(await readRealisation(r), x);
      const o = await readOptionalUnkeyedRealisation(r);
      assert.deepEqual(
        o,
        some ? { outPath: x.outPath, signatures: x.signatures } : undefined,
      );
    }),
  );
});

Deno.test("codec: content addresses and derived paths round-trip; bad ones are refused", () => {
  const ca = fc.record({
    method: fc.constantFrom("text", "flat", "nar", "git") as fc.Arbitrary<
      ContentAddress["method"]
    >,
    algo: fc.constantFrom("sha1", "sha256", "sha512", "md5"),
    hash: fc.stringMatching(/^[0-9a-z]{8,64}$/),
  }).filter((c) => c.method !== "text" || c.algo === "sha256").map((x) => ({
    ...x,
  }));
  fc.assert(
    fc.property(
      ca,
      (c) => assert.deepEqual(parseContentAddress(renderContentAddress(c)), c),
    ),
  );
  for (
    const bad of [
      "fixed",
      "fixed:r:sha999:abc",
      "text:sha1:abc",
      "nonsense:sha256:x",
      "fixed:sha256:",
    ]
  ) {
    assert.throws(
      () => parseContentAddress(bad),
      /content.address|hash algorithm|text hashing/,
    );
  }
  const dp: fc.Arbitrary<DerivedPath> = fc.oneof(
    storePath.map((p) => ({ type: "opaque" as const, path: p })),
    fc.tuple(
      storePath,
      fc.oneof(
        fc.constant("*" as const),
        fc.array(fc.stringMatching(/^[a-z]{1,5}$/), {
          minLength: 1,
          maxLength: 3,
        }).map(uniqSorted),
      ),
    )
      .map(([p, o]) => ({
        type: "built" as const,
        drvPath: `${p}.drv`,
        outputs: o,
      })),
  );
  const v = protocolVersion(34);
  fc.assert(
    fc.property(
      dp,
      (p) => assert.deepEqual(parseDerivedPath(renderDerivedPath(p, v), v), p),
    ),
  );
  assert.throws(
    () => parseDerivedPath("/nix/store/x.drv!a,,b", v),
    /invalid output list/,
  );
});

Deno.test("codec: stderr messages round-trip; errors in both formats", async () => {
  for (const m of [20, 25, 26, 38]) {
    const v = protocolVersion(m);
    const bytes = await encode((w) => {
      writeNext(w, "hello\n");
      writeRead(w, 4096);
      writeStartActivity(w, v, {
        id: 5n,
        level: 3,
        activityType: 101,
        text: "copying",
        fields: ["a", 7],
        parent: 1n,
      });
      writeResult(w, v, 5n, 105, [1, 2]);
      writeStopActivity(w, v, 5n);
      writeError(w, v, { message: "boom", status: 3, traces: ["while x"] });
      writeLast(w);
    });
    const r = readerOf(bytes, [5]);
    assert.deepEqual(await readStderr(r, v), {
      type: "next",
      message: "hello\n",
    });
    assert.deepEqual(await readStderr(r, v), { type: "read", length: 4096 });
    if (m >= 20) {
      assert.deepEqual(await readStderr(r, v), {
        type: "start",
        id: 5n,
        level: 3,
        activityType: 101,
        text: "copying",
        fields: ["a", 7n],
        parent: 1n,
      });
      assert.deepEqual(await readStderr(r, v), {
        type: "result",
        id: 5n,
        resultType: 105,
        fields: [1n, 2n],
      });
      assert.deepEqual(await readStderr(r, v), { type: "stop", id: 5n });
    }
    const err = await readStderr(r, v);
    assert.deepEqual(
      err,
      m >= 26
        ? {
          type: "error",
          error: { message: "boom", level: 0, traces: ["while x"] },
        }
        : { type: "error", error: { message: "boom", status: 3 } },
    );
    assert.deepEqual(await readStderr(r, v), { type: "last" });
    assert.ok(await r.atEnd());
  }
  await assert.rejects(
    readStderr(
      readerOf(await encode((w) => w.u64(0x1234))),
      protocolVersion(38),
    ),
    /unknown stderr message 0x1234/,
  );
});

Deno.test("codec: framed streams round-trip; drain skips the rest; huge frames are refused", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 6 }),
      cuts,
      fc.nat(3),
      async (parts, c, keep) => {
        const { w, bytes } = collectingWriter();
        const sink = new FramedSink(w, 50);
        for (const p of parts) await sink.write(p);
        await sink.close();
        w.u64(42);
        await w.flush();
        const all = Uint8Array.from(parts.flatMap((p) => [...p]));
        const r = readerOf(bytes(), c);
        const src = framedSource(r, 1 << 20);
        assert.deepEqual(await drainStream(src.stream), all);
        assert.equal(await r.readNumber(), 42);
        // Partial read, then drain.
        const r2 = readerOf(bytes(), c);
        const src2 = framedSource(r2, 1 << 20);
        const rd = src2.stream.getReader();
        for (let i = 0; i < keep; i++) if ((await rd.read()).done) break;
        rd.releaseLock();
        await src2.drain();
        assert.equal(await r2.readNumber(), 42);
      },
    ),
  );
  const huge = await encode((w) => w.u64(2n ** 60n));
  const src = framedSource(readerOf(huge), 1 << 20);
  await assert.rejects(
    drainStream(src.stream),
    /frame length 1152921504606846976 is out of range/,
  );
  const cut = await encode((w) => w.u64(100).raw(new Uint8Array(10)));
  await assert.rejects(
    drainStream(framedSource(readerOf(cut), 1 << 20).stream),
    /unexpected end of stream inside a frame/,
  );
});

/** A NAR of a directory with a file named "contents" holding "(" and a symlink: tricky tokens. */
async function trickyNar(): Promise<Uint8Array> {
  return await encode((w) => {
    w.string("nix-archive-1").string("(").string("type").string("directory");
    w.string("entry").string("(").string("name").string("contents").string(
      "node",
    );
    w.string("(").string("type").string("regular").string("contents").string(
      "(",
    ).string(")");
    w.string(")");
    w.string("entry").string("(").string("name").string("link").string("node");
    w.string("(").string("type").string("symlink").string("target").string(")")
      .string(")");
    w.string(")");
    w.string(")");
  });
}

Deno.test("codec: narCopy takes exactly one NAR off the stream", async () => {
  const nar = await trickyNar();
  for (const c of [[1], [3, 5], [1000]]) {
    const bytes = await encode((w) => w.raw(nar).u64(99));
    const r = readerOf(bytes, c);
    assert.deepEqual(await drainStream(narCopy(r)), nar);
    assert.equal(await r.readNumber(), 99);
  }
  const notNar = await encode((w) => w.string("hello"));
  await assert.rejects(drainStream(narCopy(readerOf(notNar))), /bad magic/);
  await assert.rejects(
    drainStream(narCopy(readerOf(nar.subarray(0, 100)))),
    /unexpected end of stream/,
  );
});
