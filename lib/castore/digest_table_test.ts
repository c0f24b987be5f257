import assert from "node:assert/strict";
import fc from "fast-check";
import { DigestTable } from "./digest_table.ts";

Deno.test("DigestTable: finds every added digest, keeps the first of duplicates, misses the rest (as a Map would)", () => {
  fc.assert(
    fc.property(
      // Small alphabets so equal digests and equal 4-byte hash prefixes occur.
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: 3 }),
          fc.integer({ min: 0, max: 40 }),
        ),
        { maxLength: 3000 },
      ),
      (spec) => {
        const digests = spec.map(([prefix, tail]) => {
          const d = new Uint8Array(32);
          d[0] = prefix; // same hash prefix for many: long probe runs
          d[31] = tail;
          return d;
        });
        const table = new DigestTable({
          bytes: (ref) => digests[ref],
          offset: () => 0,
        });
        const model = new Map<string, number>();
        digests.forEach((d, ref) => {
          const key = d.join();
          assert.equal(table.add(ref), !model.has(key));
          if (!model.has(key)) model.set(key, ref);
        });
        assert.equal(table.size, model.size);
        for (const [key, ref] of model) {
          assert.equal(
            table.get(Uint8Array.from(key.split(",").map(Number))),
            ref,
          );
        }
        const absent = new Uint8Array(32);
        absent[0] = 9;
        assert.equal(table.get(absent), undefined);
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("DigestTable: grows past its first capacity and clears", () => {
  const n = 50_000;
  const digests: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const d = new Uint8Array(32);
    new DataView(d.buffer).setUint32(0, Math.imul(i, 2654435761) >>> 0);
    new DataView(d.buffer).setUint32(28, i);
    digests.push(d);
  }
  const table = new DigestTable({
    bytes: (ref) => digests[ref],
    offset: () => 0,
  });
  for (let i = 0; i < n; i++) assert.ok(table.add(i));
  for (let i = 0; i < n; i += 997) assert.equal(table.get(digests[i]), i);
  table.clear();
  assert.equal(table.size, 0);
  assert.equal(table.get(digests[5]), undefined);
});
