import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { CATALOG_FILE, PackCatalog, writeCatalog } from "./pack_catalog.ts";

/** A pack index (56-byte entries) of the given digests, with made-up places. */
function packIndex(digests: Uint8Array[], salt: number): Uint8Array {
  const index = new Uint8Array(56 * digests.length);
  const v = new DataView(index.buffer);
  digests.forEach((d, i) => {
    index.set(d, 56 * i);
    v.setBigUint64(56 * i + 32, BigInt(8 + i * 1000 + salt) + 2n ** 33n, true);
    v.setUint32(56 * i + 40, 100 + i, true);
    v.setUint32(56 * i + 44, 200 + i + salt, true);
    index[56 * i + 48] = 1 + (i % 3);
  });
  return index;
}

function digest(seed: number): Uint8Array {
  const d = new Uint8Array(32);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < 32; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    d[i] = x >>> 24;
  }
  return d;
}

function withDir(fn: (dir: string) => void) {
  const dir = fs.mkdtempSync(join(tmpdir(), "snix-catalog-"));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test("pack catalog: every record of every pack is found with its place; a digest in two packs gives the first usable one; others miss", () => {
  withDir((dir) => {
    const a = Array.from({ length: 3000 }, (_, i) => digest(i));
    // Pack b shares 100 digests with a (a record merged twice after a crash)
    // and has digests sharing a's first two bytes.
    const b = [
      ...a.slice(0, 100),
      ...Array.from({ length: 2000 }, (_, i) => {
        const d = digest(10_000 + i);
        d[0] = a[i][0];
        d[1] = a[i][1];
        return d;
      }),
    ];
    const packs = [
      { name: "a.pack", size: 111, index: packIndex(a, 0) },
      { name: "b.pack", size: 222, index: packIndex(b, 7) },
    ];
    assert.equal(PackCatalog.open(dir), undefined, "no catalog yet");
    writeCatalog(dir, join(dir, "tmp"), packs);
    const cat = PackCatalog.open(dir)!;
    try {
      assert.deepEqual(cat.packs, [
        { name: "a.pack", size: 111, count: 3000 },
        { name: "b.pack", size: 222, count: 2100 },
      ]);
      assert.equal(cat.count, 5100);
      const all = () => true;
      b.forEach((d, i) => {
        const e = cat.lookup(d, (p) => p === 1)!;
        assert.deepEqual(e, {
          pack: 1,
          index: i,
          offset: 8 + i * 1000 + 7 + 2 ** 33,
          length: 100 + i,
          rawSize: 200 + i + 7,
          kind: 1 + (i % 3),
        });
      });
      a.forEach((d, i) => {
        const e = cat.lookup(d, all)!;
        assert.ok(e, `a[${i}] found`);
        assert.equal(e.index, i);
        if (i >= 100) assert.equal(e.pack, 0);
      });
      assert.equal(cat.lookup(a[5], (p) => p === 0)?.pack, 0);
      assert.equal(cat.lookup(a[500], (p) => p === 1), undefined);
      for (let i = 0; i < 200; i++) {
        assert.equal(cat.lookup(digest(50_000 + i), all), undefined);
      }
      assert.equal(cat.lookup(new Uint8Array(31), all), undefined);
    } finally {
      cat.close();
    }
  });
});

Deno.test("pack catalog: an empty catalog works; a damaged or truncated one is refused with an error naming it", () => {
  withDir((dir) => {
    writeCatalog(dir, join(dir, "tmp"), []);
    const empty = PackCatalog.open(dir)!;
    assert.equal(empty.lookup(digest(1), () => true), undefined);
    empty.close();
    writeCatalog(dir, join(dir, "tmp"), [
      { name: "x.pack", size: 1, index: packIndex([digest(1)], 0) },
    ]);
    const path = join(dir, CATALOG_FILE);
    const good = fs.readFileSync(path);
    const cases: [string, (b: Uint8Array) => Uint8Array][] = [
      ["pack list byte", (b) => b.with(30, b[30] ^ 1)],
      ["fan-out byte", (b) => b.with(100, b[100] ^ 1)],
      ["truncated", (b) => b.subarray(0, b.length - 10)],
      ["no magic", (b) => b.with(0, 0)],
    ];
    for (const [what, damage] of cases) {
      fs.writeFileSync(path, damage(new Uint8Array(good)));
      assert.throws(
        () => PackCatalog.open(dir),
        new RegExp(`pack catalog ${path} is damaged`),
        what,
      );
    }
    assert.deepEqual(
      fs.readdirSync(join(dir, "tmp")),
      [],
      "no temporary file left",
    );
  });
});
