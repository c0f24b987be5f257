/**
 * Child process for tests/castore_memory_test.ts: streams MIB mebibytes of
 * pseudo-random data into a LocalBlobService in DATA_DIR, reads it back, and
 * prints `<digest hex> <peak RSS KiB after write> <peak RSS KiB after read>`.
 *
 * Usage: castore_memory_child.ts DATA_DIR MIB
 */
import { readFileSync } from "node:fs";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { digestToHex } from "../lib/castore/digest.ts";

const hwm = () =>
  Number(
    /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1],
  );
const [dataDir, mib] = [Deno.args[0], Number(Deno.args[1])];
const svc = await LocalBlobService.open(dataDir);
const w = svc.put();
const piece = new Uint8Array(1 << 20);
for (let i = 0; i < mib; i++) {
  for (let o = 0; o < piece.length; o += 65536) {
    crypto.getRandomValues(piece.subarray(o, o + 65536));
  }
  await w.write(piece);
}
const digest = await w.close();
const afterWrite = hwm();
let n = 0;
for await (const p of (await svc.read(digest))!) n += p.length;
if (n !== mib << 20) throw new Error(`read ${n} bytes`);
console.log(`${digestToHex(digest)} ${afterWrite} ${hwm()}`);
