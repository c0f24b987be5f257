/**
 * Golden vectors from NixOS/nix `src/libstore-tests/data/worker-protocol/*.bin`
 * (commit 88b09c64fbea076a0376830d98e5331f70ed31a3; copied into
 * tests/data/worker-protocol/). Each is read with our codec, checked against
 * the values in Nix's `src/libstore-tests/worker-protocol.cc`, and written back
 * byte for byte where Nix's test is two-way.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  type BuildResult,
  readBuildResult,
  readKeyedBuildResult,
  writeBuildResult,
  writeKeyedBuildResult,
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
import {
  readClientHandshakeInfo,
  readTrustedFlag,
  writeClientHandshakeInfo,
  writeTrustedFlag,
} from "./handshake.ts";
import {
  readUnkeyedValidPathInfo,
  readValidPathInfo,
  type ValidPathInfo,
  writeUnkeyedValidPathInfo,
  writeValidPathInfo,
} from "./path_info.ts";
import {
  readDrvOutput,
  readRealisation,
  readUnkeyedRealisation,
  writeDrvOutput,
  writeRealisation,
  writeUnkeyedRealisation,
} from "./realisation.ts";
import { encode, readerOf } from "./test_util.ts";
import {
  FEATURE_REALISATION_WITH_PATH,
  protocolVersion,
  versionToWire,
} from "./version.ts";
import { WORKER_MAGIC_2 } from "./constants.ts";

function golden(name: string): Uint8Array {
  return new Uint8Array(
    readFileSync(
      new URL(`../../tests/data/worker-protocol/${name}.bin`, import.meta.url),
    ),
  );
}

const v10 = protocolVersion(10);
const G = "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q";
const HASH16 =
  "15e3c560894cbb27085cf65b5a2ecb18488c999497f4531b6907a7581ce6d527";

Deno.test("golden: string, vector, set, optional-store-path, optional-content-address", async () => {
  const r = readerOf(golden("string"), [5]);
  const strings: string[] = [];
  for (let i = 0; i < 5; i++) strings.push(await r.readString(100));
  assert.deepEqual(strings, ["", "hi", "white rabbit", "大白兔", "oh no "]); // the C++ literal stops at its first NUL
  assert.ok(await r.atEnd());
  assert.deepEqual(
    await encode((w) => strings.forEach((s) => w.string(s))),
    golden("string"),
  );

  const vec = readerOf(golden("vector"));
  assert.deepEqual(await vec.readStrings(10, 10), []);
  assert.deepEqual(await vec.readStrings(10, 10), [""]);
  assert.deepEqual(await vec.readStrings(10, 10), ["", "foo", "bar"]);
  assert.deepEqual(await vec.readList(10, (x) => x.readStrings(10, 10)), [[], [
    "",
  ], ["", "1", "2"]]);
  assert.ok(await vec.atEnd());

  const set = readerOf(golden("set"));
  const sets = [
    await set.readStrings(10, 10),
    await set.readStrings(10, 10),
    await set.readStrings(10, 10),
  ];
  assert.deepEqual(sets, [[], [""], ["", "bar", "foo"]]);
  const nested = await set.readList(10, (x) => x.readStrings(10, 10));
  assert.deepEqual(nested, [[], [""], ["", "1", "2"]]);
  assert.deepEqual(
    await encode((w) => {
      w.stringSet([]).stringSet([""]).stringSet(["", "foo", "bar"]).u64(3);
      for (const s of nested) w.stringSet(s);
    }),
    golden("set"),
  );

  const osp = readerOf(golden("optional-store-path"));
  assert.equal(await osp.readString(4096), "");
  assert.equal(await osp.readString(4096), `${G}-foo-bar`);
  const oca = readerOf(golden("optional-content-address"));
  assert.equal(parseContentAddress(await oca.readString(4096)), undefined);
  const ca = parseContentAddress(await oca.readString(4096));
  assert.deepEqual(ca, {
    method: "flat",
    algo: "sha1",
    hash: "1amk6n7wxjlw4qkq6dcj6mm7hw3acrw0",
  });
  assert.deepEqual(
    await encode((w) => w.string("").string(renderContentAddress(ca))),
    golden("optional-content-address"),
  );
});

Deno.test("golden: store-path, content-address, derived paths", async () => {
  const sp = readerOf(golden("store-path"));
  assert.equal(await sp.readString(4096), `${G}-foo`);
  assert.equal(await sp.readString(4096), `${G}-foo-bar`);

  const ca = readerOf(golden("content-address"));
  const cas: ContentAddress[] = [];
  for (let i = 0; i < 3; i++) {
    cas.push(parseContentAddress(await ca.readString(4096))!);
  }
  assert.deepEqual(cas.map((c) => [c.method, c.algo]), [["text", "sha256"], [
    "flat",
    "sha1",
  ], ["nar", "sha256"]]);
  assert.deepEqual(
    await encode((w) => cas.forEach((c) => w.string(renderContentAddress(c)))),
    golden("content-address"),
  );

  for (
    const [file, minor, expected] of [
      ["derived-path-1.29", 29, [
        { type: "opaque", path: `${G}-foo` },
        { type: "built", drvPath: `${G}-bar.drv`, outputs: "*" },
        { type: "built", drvPath: `${G}-bar.drv`, outputs: ["x", "y"] },
      ]],
      ["derived-path-1.30", 30, [
        { type: "opaque", path: `${G}-foo` },
        { type: "opaque", path: `${G}-foo.drv` },
        { type: "built", drvPath: `${G}-bar.drv`, outputs: "*" },
        { type: "built", drvPath: `${G}-bar.drv`, outputs: ["x", "y"] },
      ]],
    ] as const
  ) {
    const v = protocolVersion(minor);
    const r = readerOf(golden(file));
    const got: DerivedPath[] = [];
    for (let i = 0; i < expected.length; i++) {
      got.push(parseDerivedPath(await r.readString(4096), v));
    }
    assert.deepEqual(got, expected);
    assert.deepEqual(
      await encode((w) =>
        got.forEach((p) => w.string(renderDerivedPath(p, v)))
      ),
      golden(file),
    );
  }
});

Deno.test("golden: valid path infos 1.15 and 1.16", async () => {
  const hash =
    "15e3c560894cbb27085cf65b5a2ecb18488c999497f4531b6907a7581ce6d527"; // sha256-FePFYIlM…
  const v15 = protocolVersion(15), v16 = protocolVersion(16);
  const base = {
    deriver: "",
    narHash: hash,
    references: [] as string[],
    registrationTime: 23423,
    narSize: 34878,
  };
  const r = readerOf(golden("unkeyed-valid-path-info-1.15"));
  const a = await readUnkeyedValidPathInfo(r, v15);
  const b = await readUnkeyedValidPathInfo(r, v15);
  assert.ok(await r.atEnd());
  assert.deepEqual(a, { ...base, ultimate: false, sigs: [], ca: "" });
  assert.equal(b.deriver, `${G}-bar.drv`);
  assert.deepEqual(b.references, [
    "/nix/store/g1w7hyyyy1w7hy3qg1w7hy3qgqqqqy3q-foo.drv",
  ]);
  assert.deepEqual(
    await encode((w) =>
      [a, b].forEach((x) => writeUnkeyedValidPathInfo(w, v15, x))
    ),
    golden("unkeyed-valid-path-info-1.15"),
  );

  const r15 = readerOf(golden("valid-path-info-1.15"), [3, 17]);
  const k = [
    await readValidPathInfo(r15, v15),
    await readValidPathInfo(r15, v15),
  ];
  assert.equal(k[0].path, `${G}-bar`);
  assert.deepEqual(k[1].references, [
    `${G}-bar`,
    `/nix/store/g1w7hyyyy1w7hy3qg1w7hy3qgqqqqy3q-foo`,
  ]);
  assert.deepEqual(
    await encode((w) => k.forEach((x) => writeValidPathInfo(w, v15, x))),
    golden("valid-path-info-1.15"),
  );

  const r16 = readerOf(golden("valid-path-info-1.16"));
  const l: ValidPathInfo[] = [];
  for (let i = 0; i < 3; i++) l.push(await readValidPathInfo(r16, v16));
  assert.ok(await r16.atEnd());
  assert.equal(l[0].ultimate, true);
  assert.equal(l[1].sigs.length, 2);
  assert.match(l[1].sigs[0], /^fake-sig-1:A{86}==$/);
  assert.match(
    l[2].ca,
    /^fixed:r:sha256:1lr187v6dck1rjh2j6svpikcfz53wyl3qrlcbb405zlh13x0khhh$/,
  );
  assert.equal(l[2].narHash, hash);
  assert.deepEqual(
    await encode((w) => l.forEach((x) => writeValidPathInfo(w, v16, x))),
    golden("valid-path-info-1.16"),
  );
});

Deno.test("golden: build results 1.27 .. 1.37 and the realisation feature", async () => {
  for (
    const [file, minor, features, twoWay] of [
      ["build-result-1.27", 27, [], true],
      ["build-result-1.28", 28, [], false],
      ["build-result-1.29", 29, [], false],
      ["build-result-1.29-compat", 29, [], true],
      ["build-result-1.37", 37, [], false],
      ["build-result-realisation-with-path-not-hash", 38, [
        FEATURE_REALISATION_WITH_PATH,
      ], true],
    ] as const
  ) {
    const v = protocolVersion(minor, features);
    const r = readerOf(golden(file), [7]);
    const res: BuildResult[] = [];
    for (let i = 0; i < 3; i++) res.push(await readBuildResult(r, v));
    assert.ok(await r.atEnd(), file);
    assert.deepEqual(res.map((x) => [x.status, x.errorMsg]), [
      [5, "no idea why"],
      [12, "no idea why"],
      [0, ""],
    ], file);
    if (minor >= 28) {
      assert.deepEqual(
        [...res[2].builtOutputs].map(([k, x]) => [k, x.outPath]).sort(),
        [["bar", `${G}-bar`], ["foo", `${G}-foo`]],
        file,
      );
    }
    if (minor >= 29) {
      assert.deepEqual([
        res[1].timesBuilt,
        res[1].isNonDeterministic,
        res[1].startTime,
        res[1].stopTime,
      ], [3, true, 30, 50]);
    }
    if (minor >= 37) {
      assert.equal(res[2].cpuUser, 500_000_000n);
      assert.equal(res[2].cpuSystem, 604_000_000n);
    }
    if (twoWay) {
      assert.deepEqual(
        await encode((w) => res.forEach((x) => writeBuildResult(w, v, x))),
        golden(file),
        file,
      );
    }
  }
  const v29 = protocolVersion(29);
  const r = readerOf(golden("keyed-build-result-1.29"));
  const k = [
    await readKeyedBuildResult(r, v29),
    await readKeyedBuildResult(r, v29),
  ];
  assert.deepEqual(k.map((x) => x.path), [`${G}-xxx`, `${G}-bar.drv!out`]);
  assert.deepEqual(
    await encode((w) => k.forEach((x) => writeKeyedBuildResult(w, v29, x))),
    golden("keyed-build-result-1.29"),
  );
});

Deno.test("golden: realisations, DrvOutput, trusted flag, handshake info", async () => {
  const d = readerOf(golden("drv-output-realisation-with-path-not-hash"));
  const outs = [await readDrvOutput(d), await readDrvOutput(d)];
  assert.deepEqual(outs, [{ drvPath: `${G}-foo.drv`, outputName: "baz" }, {
    drvPath: `${G}-foo.drv`,
    outputName: "quux",
  }]);
  assert.deepEqual(
    await encode((w) => outs.forEach((o) => writeDrvOutput(w, o))),
    golden("drv-output-realisation-with-path-not-hash"),
  );

  const u = await readUnkeyedRealisation(
    readerOf(golden("unkeyed-realisation-realisation-with-path-not-hash")),
  );
  assert.equal(u.outPath, `${G}-foo`);
  assert.deepEqual(u.signatures.map((s) => s.split(":")[0]), ["asdf", "qwer"]);
  assert.deepEqual(
    await encode((w) => writeUnkeyedRealisation(w, u)),
    golden("unkeyed-realisation-realisation-with-path-not-hash"),
  );
  const full = await readRealisation(
    readerOf(golden("realisation-realisation-with-path-not-hash")),
  );
  assert.equal(full.outputName, "baz");
  assert.deepEqual(
    await encode((w) => writeRealisation(w, full)),
    golden("realisation-realisation-with-path-not-hash"),
  );

  const t = readerOf(golden("optional-trusted-flag"));
  const flags = [
    await readTrustedFlag(t),
    await readTrustedFlag(t),
    await readTrustedFlag(t),
  ];
  assert.deepEqual(flags, [undefined, true, false]);
  assert.deepEqual(
    await encode((w) => flags.forEach((f) => writeTrustedFlag(w, f))),
    golden("optional-trusted-flag"),
  );

  for (
    const [file, minor, infos] of [
      ["client-handshake-info_1_30", 30, [{}]],
      ["client-handshake-info_1_33", 33, [{ daemonNixVersion: "foo" }, {
        daemonNixVersion: "bar",
      }]],
      ["client-handshake-info_1_35", 35, [{
        daemonNixVersion: "foo",
        remoteTrustsUs: false,
      }, {
        daemonNixVersion: "bar",
        remoteTrustsUs: true,
      }]],
    ] as const
  ) {
    const v = protocolVersion(minor);
    const r = readerOf(golden(file));
    for (const expected of infos) {
      assert.deepEqual(await readClientHandshakeInfo(r, v), expected);
    }
    assert.ok(await r.atEnd());
    assert.deepEqual(
      await encode((w) =>
        infos.forEach((i) => writeClientHandshakeInfo(w, v, i))
      ),
      golden(file),
    );
  }

  // The daemon's greeting at 1.10 (no feature exchange below 1.38).
  assert.deepEqual(
    await encode((w) => w.u64(WORKER_MAGIC_2).u64(versionToWire(v10.minor))),
    golden("handshake-to-client"),
  );
  void HASH16;
});
