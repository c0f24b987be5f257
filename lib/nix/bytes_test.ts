import assert from "node:assert/strict";
import { concatBytes } from "./bytes.ts";

Deno.test("concatBytes: parts in order, one part as it is, none as empty", () => {
  const a = new Uint8Array([1, 2]);
  const b = new Uint8Array([3, 4, 5, 6]).subarray(1, 3);
  assert.deepEqual(
    concatBytes([a, new Uint8Array(0), b]),
    new Uint8Array([1, 2, 4, 5]),
  );
  assert.deepEqual(concatBytes([a, b], 4), new Uint8Array([1, 2, 4, 5]));
  assert.equal(concatBytes([a]), a);
  assert.equal(concatBytes([]).length, 0);
});
