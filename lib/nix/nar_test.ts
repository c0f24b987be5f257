import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { narChunks, type NarNode, narStream } from "./nar_writer.ts";
import { NarError, type NarEvent, readNar } from "./nar_reader.ts";
import { narNodeFromTree, type NarTree, readNarTree } from "./nar_memory.ts";
import { compareBytes, MAX_NAR_DEPTH } from "./nar_common.ts";
import { concatBytes } from "./bytes.ts";
import { collect, streamOf } from "./_test_streams.ts";

const enc = new TextEncoder();
const b = (s: string) => enc.encode(s);

// NAR vectors from snix (snix/nix-compat/src/nar/tests/*.nar).
const vector = (name: string) =>
  new Uint8Array(
    readFileSync(
      fileURLToPath(new URL(`./testdata/${name}.nar`, import.meta.url)),
    ),
  );

type Tok = string | Uint8Array | { len: bigint } | { raw: Uint8Array };

/** Encodes tokens by hand: strings get length + padding; {len} is a bare u64; {raw} verbatim. */
function nar(...toks: Tok[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const t of toks) {
    if (typeof t === "object" && "len" in t) {
      const u = new Uint8Array(8);
      new DataView(u.buffer).setBigUint64(0, t.len, true);
      parts.push(u);
    } else if (typeof t === "object" && "raw" in t) {
      parts.push(t.raw);
    } else {
      const s = typeof t === "string" ? b(t) : t;
      const u = new Uint8Array(8);
      new DataView(u.buffer).setBigUint64(0, BigInt(s.length), true);
      parts.push(u, s, new Uint8Array((8 - (s.length % 8)) % 8));
    }
  }
  return concatBytes(parts);
}

const file = (contents: string, executable = false): NarTree => ({
  type: "regular",
  executable,
  contents: b(contents),
});
const link = (target: string): NarTree => ({
  type: "symlink",
  target: b(target),
});
const dir = (...entries: [string | Uint8Array, NarTree][]): NarTree => ({
  type: "directory",
  entries: entries.map(([n, t]) => [typeof n === "string" ? b(n) : n, t]),
});

const COMPLICATED = dir(
  [".keep", file("")],
  ["aa", link("/nix/store/somewhereelse")],
  ["keep", dir([".keep", file("")])],
);

Deno.test("nar writer: matches snix's vectors", async () => {
  assert.deepEqual(
    await collect(narStream(narNodeFromTree(file("Hello World!")))),
    vector("helloworld"),
  );
  assert.deepEqual(
    await collect(narStream(narNodeFromTree(link("/nix/store/somewhereelse")))),
    vector("symlink"),
  );
  assert.deepEqual(
    await collect(narStream(narNodeFromTree(COMPLICATED))),
    vector("complicated"),
  );
});

Deno.test("nar writer: executable file layout", async () => {
  assert.deepEqual(
    await collect(narStream(narNodeFromTree(file("#!/bin/sh\n", true)))),
    nar(
      "nix-archive-1",
      "(",
      "type",
      "regular",
      "executable",
      "",
      "contents",
      "#!/bin/sh\n",
      ")",
    ),
  );
});

Deno.test("nar reader: reads snix's vectors into the same trees", async () => {
  assert.deepEqual(
    await readNarTree(streamOf(vector("helloworld"))),
    file("Hello World!"),
  );
  assert.deepEqual(
    await readNarTree(streamOf(vector("symlink"), 1)),
    link("/nix/store/somewhereelse"),
  );
  assert.deepEqual(
    await readNarTree(streamOf(vector("complicated"), 1000)),
    COMPLICATED,
  );
});

Deno.test("nar reader: event order and paths", async () => {
  const evs: string[] = [];
  for await (const ev of readNar(streamOf(vector("complicated"), 3))) {
    evs.push(
      `${ev.type} /${
        ev.path.map((p) => new TextDecoder().decode(p)).join("/")
      }`,
    );
    if (ev.type === "regular") await ev.contents.cancel();
  }
  assert.deepEqual(evs, [
    "directory /",
    "regular /.keep",
    "symlink /aa",
    "directory /keep",
    "regular /keep/.keep",
    "directory-end /keep",
    "directory-end /",
  ]);
});

Deno.test("nar reader: unread or partly read contents are skipped", async () => {
  const tree = dir(["a", file("x".repeat(1000))], ["b", file("y".repeat(20))], [
    "c",
    link("t"),
  ]);
  const bytes = await collect(narStream(narNodeFromTree(tree)));
  const seen: string[] = [];
  for await (const ev of readNar(streamOf(bytes, 13))) {
    if (ev.type === "regular" && ev.path[0][0] === 0x61) {
      const r = ev.contents.getReader();
      await r.read(); // only the first chunk
      r.releaseLock();
    }
    seen.push(ev.type);
  }
  assert.deepEqual(seen, [
    "directory",
    "regular",
    "regular",
    "symlink",
    "directory-end",
  ]);
});

Deno.test("nar writer: reuseBuffers gives the same bytes", async () => {
  const big = new Uint8Array(700_000).map((_, i) => (i * 31) & 0xff);
  const tree = dir(["a", { type: "regular", contents: big }], [
    "b",
    file("small"),
  ]);
  const reused: Uint8Array[] = [];
  for await (
    const c of narChunks(narNodeFromTree(tree), { reuseBuffers: true })
  ) reused.push(c.slice());
  assert.deepEqual(
    concatBytes(reused),
    await collect(narStream(narNodeFromTree(tree))),
  );
});

async function writeError(node: NarNode): Promise<Error> {
  try {
    await collect(narStream(node));
  } catch (e) {
    return e as Error;
  }
  throw new Error("no error");
}

Deno.test("nar writer: rejects bad trees", async () => {
  const cases: [NarTree | NarNode, RegExp][] = [
    [dir(["b", file("")], ["a", file("")]), /"a" comes after "b"/],
    [dir(["a", file("")], ["a", file("")]), /"a" is duplicated/],
    [dir(["", file("")]), /invalid entry name/],
    [dir([".", file("")]), /invalid entry name/],
    [dir(["..", file("")]), /invalid entry name/],
    [dir(["a/b", file("")]), /invalid entry name/],
    [dir(["a\0b", file("")]), /invalid entry name/],
    [dir(["x".repeat(256), file("")]), /invalid entry name/],
    [link(""), /invalid symlink target/],
    [link("a\0"), /invalid symlink target/],
    [link("x".repeat(4096)), /invalid symlink target/],
    [
      {
        type: "regular",
        executable: false,
        size: 3,
        contents: () => Promise.resolve(streamOf(b("ab"))),
      },
      /declared 3 bytes but its contents have 2/,
    ],
    [
      {
        type: "regular",
        executable: false,
        size: 1,
        contents: () => Promise.resolve(streamOf(b("ab"))),
      },
      /declared 1 bytes but its contents exceed/,
    ],
    [{
      type: "regular",
      executable: false,
      size: -1,
      contents: () => Promise.reject(),
    }, /invalid size/],
  ];
  for (const [t, re] of cases) {
    const node = "entries" in t && Array.isArray(t.entries) ||
        "contents" in t && t.contents instanceof Uint8Array ||
        (t.type === "symlink")
      ? narNodeFromTree(t as NarTree)
      : t as NarNode;
    const e = await writeError(node);
    assert.ok(e instanceof NarError, String(e));
    assert.match(e.message, re);
  }
});

async function readError(bytes: Uint8Array, piece = 5): Promise<NarError> {
  try {
    for await (const ev of readNar(streamOf(bytes, piece))) {
      if (ev.type === "regular") {
        for await (const _ of ev.contents) {
          /* drain */
        }
      }
    }
  } catch (e) {
    assert.ok(e instanceof NarError, `not a NarError: ${e}`);
    return e;
  }
  throw new Error("no error");
}

const HEAD: Tok[] = ["nix-archive-1"];
const entry = (name: string | Uint8Array, ...node: Tok[]): Tok[] => [
  "entry",
  "(",
  "name",
  name,
  "node",
  "(",
  ...node,
  ")",
  ")",
];
const REG: Tok[] = ["type", "regular", "contents", ""];

Deno.test("nar reader: rejects every bad-input class with a clear message", async () => {
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /does not look like a NAR.*end of input/],
    [b("garbage garbage garbage garbage"), /does not look like a NAR/],
    [nar("nix-archive-2", "(", ...REG, ")"), /does not look like a NAR/],
    [nar(...HEAD, "(", "type", "fifo", ")"), /unknown node type "fifo"/],
    [
      nar(...HEAD, ")", ...REG, ")"),
      /expected "\(" opening node "\/", got "\)"/,
    ],
    [
      nar(
        ...HEAD,
        "(",
        "type",
        "directory",
        ...entry("b", ...REG),
        ...entry("a", ...REG),
        ")",
      ),
      /"a" comes after "b"/,
    ],
    [
      nar(
        ...HEAD,
        "(",
        "type",
        "directory",
        ...entry("a", ...REG),
        ...entry("a", ...REG),
        ")",
      ),
      /"a" is duplicated/,
    ],
    [
      nar(...HEAD, "(", "type", "directory", ...entry("..", ...REG), ")"),
      /invalid entry name "\.\."/,
    ],
    [
      nar(...HEAD, "(", "type", "directory", ...entry(".", ...REG), ")"),
      /invalid entry name/,
    ],
    [
      nar(...HEAD, "(", "type", "directory", ...entry("", ...REG), ")"),
      /invalid entry name ""/,
    ],
    [
      nar(...HEAD, "(", "type", "directory", ...entry("a/b", ...REG), ")"),
      /invalid entry name/,
    ],
    [
      nar(...HEAD, "(", "type", "directory", ...entry("a\0", ...REG), ")"),
      /invalid entry name/,
    ],
    [
      nar(
        ...HEAD,
        "(",
        "type",
        "directory",
        ...entry("x".repeat(256), ...REG),
        ")",
      ),
      /at most 255/,
    ],
    [
      nar(...HEAD, "(", "type", "directory", "enTry", ")"),
      /expected "entry" or "\)"/,
    ],
    [
      nar(...HEAD, "(", "type", "symlink", "target", "", ")"),
      /invalid symlink target/,
    ],
    [
      nar(...HEAD, "(", "type", "symlink", "target", "a\0b", ")"),
      /invalid symlink target/,
    ],
    [
      nar(...HEAD, "(", "type", "symlink", "target", "x".repeat(4096), ")"),
      /at most 4095/,
    ],
    [
      nar(
        ...HEAD,
        "(",
        "type",
        "regular",
        "contents",
        "",
        "executable",
        "",
        ")",
      ),
      /expected "\)" closing/,
    ],
    [
      nar(
        ...HEAD,
        "(",
        "type",
        "regular",
        "executable",
        "x",
        "contents",
        "",
        ")",
      ),
      /executable marker.*not empty/,
    ],
    [
      nar(
        ...HEAD,
        "(",
        "type",
        "regular",
        "executable",
        "",
        "executable",
        "",
        ")",
      ),
      /expected "contents"/,
    ],
    [
      nar(...HEAD, "(", "type", "regular", "size", "", ")"),
      /expected "executable" or "contents"/,
    ],
    [nar(...HEAD, "(", ...REG, ")", ")"), /trailing bytes/],
    [
      concatBytes([nar(...HEAD, "(", ...REG, ")"), new Uint8Array(1)]),
      /trailing bytes/,
    ],
    // Bad padding: "regular" padded with a non-zero byte; contents padding non-zero.
    [
      concatBytes([
        nar(...HEAD, "(", "type"),
        nar({ len: 7n }),
        b("regular"),
        new Uint8Array([1]),
      ]),
      /non-zero padding after type/,
    ],
    [
      concatBytes([
        nar(...HEAD, "(", "type", "regular", "contents"),
        nar({ len: 1n }),
        b("x\0\0\0\0\0\0\x02"),
        nar(")"),
      ]),
      /non-zero padding after contents/,
    ],
    // Huge lengths: bounded before allocating anything.
    [
      concatBytes([nar(...HEAD, "(", "type"), nar({ len: 1n << 40n })]),
      /unknown node type \(too long\)/,
    ],
    [
      concatBytes([
        nar(...HEAD, "(", "type", "directory", "entry", "(", "name"),
        nar({ len: 1n << 62n }),
      ]),
      /too large/,
    ],
    [
      concatBytes([
        nar(...HEAD, "(", "type", "regular", "contents"),
        nar({ len: 1n << 60n }),
      ]),
      /too large/,
    ],
    [
      concatBytes([
        nar(...HEAD, "(", "type", "regular", "contents"),
        nar({ len: 1n << 50n }),
        b("abc"),
      ]),
      /end of input in contents/,
    ],
    [nar(...HEAD, "(", "x".repeat(5000)), /expected "type".*longer string/],
  ];
  for (const [bytes, re] of cases) {
    const e = await readError(bytes);
    assert.match(e.message, re, `${re}: got ${e.message}`);
    assert.match(e.message, /^bad NAR at byte \d+: /);
    assert.equal(typeof e.offset, "number");
  }
});

Deno.test("nar reader: error offsets point at the offending token", async () => {
  const bytes = nar(
    ...HEAD,
    "(",
    "type",
    "directory",
    ...entry("b", ...REG),
    ...entry("a", ...REG),
    ")",
  );
  const e = await readError(bytes);
  // header 24, "(" 16, "type" 16, "directory" 24, first entry 8 tokens of 16 + "regular"(16)... compute:
  const before = nar(
    ...HEAD,
    "(",
    "type",
    "directory",
    ...entry("b", ...REG),
    "entry",
    "(",
    "name",
  ).length;
  assert.equal(e.offset, before);
});

Deno.test("nar reader: truncation at every byte is a NarError", async () => {
  const full = concatBytes([
    nar(...HEAD, "(", "type", "directory"),
    nar(
      ...entry(
        "a",
        "type",
        "regular",
        "executable",
        "",
        "contents",
        "hello, world",
      ),
    ),
    nar(...entry("b", "type", "symlink", "target", "../a")),
    nar("entry", "(", "name", "c", "node", "(", "type", "directory", ")", ")"),
    nar(")"),
  ]);
  // The full NAR reads fine.
  await readNarTree(streamOf(full));
  for (let n = 0; n < full.length; n++) {
    const e = await readError(full.subarray(0, n), 3);
    assert.match(e.message, /end of input/, `cut at ${n}: ${e.message}`);
  }
});

Deno.test("nar reader: nesting depth is bounded", async () => {
  const deep = (n: number) => {
    const toks: Tok[] = [...HEAD];
    for (let i = 0; i < n; i++) {
      toks.push("(", "type", "directory", "entry", "(", "name", "d", "node");
    }
    toks.push("(", ...REG, ")");
    for (let i = 0; i < n; i++) toks.push(")", ")");
    return nar(...toks);
  };
  // Correct structure check on a small depth.
  await readNarTree(streamOf(deep(3), 64));
  const e = await readError(deep(MAX_NAR_DEPTH + 1), 4096);
  assert.match(e.message, /nested deeper/);
});

Deno.test("nar reader: garbage never hangs or throws anything but NarError", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (junk) => {
      const withHead = concatBytes([nar(...HEAD), junk]);
      for (const input of [junk, withHead]) {
        try {
          for await (const ev of readNar(streamOf(input, 11))) {
            if (ev.type === "regular") {
              for await (const _ of ev.contents) {
                /* drain */
              }
            }
          }
        } catch (e) {
          assert.ok(e instanceof NarError, String(e));
        }
      }
    }),
    { numRuns: 300 },
  );
});

// Random trees with valid, sorted, unique names.
const nameArb = fc.uint8Array({ minLength: 1, maxLength: 6 }).map((u) =>
  u.map((c) => (c === 0 || c === 0x2f ? 0x61 : c))
)
  .filter((u) =>
    !(u.length === 1 && u[0] === 0x2e) &&
    !(u.length === 2 && u[0] === 0x2e && u[1] === 0x2e)
  );
const treeArb: fc.Arbitrary<NarTree> = fc.letrec<{ tree: NarTree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.record({
      type: fc.constant("regular" as const),
      executable: fc.boolean(),
      contents: fc.uint8Array({ maxLength: 40 }),
    }),
    fc.record({
      type: fc.constant("symlink" as const),
      target: fc.uint8Array({ minLength: 1, maxLength: 20 }).map((u) =>
        u.map((c) => c || 1)
      ),
    }),
    fc.array(fc.tuple(nameArb, tie("tree")), { maxLength: 4 }).map((es) => {
      const sorted = es.sort((x, y) => compareBytes(x[0], y[0]));
      const uniq = sorted.filter((e, i) =>
        i === 0 || compareBytes(sorted[i - 1][0], e[0]) !== 0
      );
      return { type: "directory" as const, entries: uniq };
    }),
  ),
})).tree;

Deno.test("nar: property: write -> read -> write round trip", async () => {
  await fc.assert(
    fc.asyncProperty(
      treeArb,
      fc.integer({ min: 1, max: 64 }),
      async (tree, piece) => {
        const bytes = await collect(narStream(narNodeFromTree(tree)));
        const back = await readNarTree(streamOf(bytes, piece));
        const norm = (t: NarTree): NarTree =>
          t.type === "regular"
            ? {
              type: "regular",
              executable: t.executable ?? false,
              contents: t.contents,
            }
            : t.type === "directory"
            ? {
              type: "directory",
              entries: t.entries.map(([n, c]) => [n, norm(c)]),
            }
            : { type: "symlink", target: t.target };
        assert.deepEqual(back, norm(tree));
        assert.deepEqual(
          await collect(narStream(narNodeFromTree(back))),
          bytes,
        );
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("nar reader: events carry sizes and flags", async () => {
  const bytes = await collect(
    narStream(narNodeFromTree(dir(["x", file("12345678", true)]))),
  );
  const evs: NarEvent[] = [];
  for await (const ev of readNar(streamOf(bytes))) {
    evs.push(ev);
    if (ev.type === "regular") {
      assert.equal(ev.size, 8);
      assert.equal(ev.executable, true);
      assert.deepEqual(await collect(ev.contents), b("12345678"));
    }
  }
  assert.equal(evs.length, 3);
});
