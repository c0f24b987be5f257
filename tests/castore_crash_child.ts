/**
 * Child process for tests/castore_crash_test.ts: writes blobs (and small
 * directory trees) into a data directory, printing `done <seed> <hex>` after
 * each blob's close() resolved.
 *
 * Usage: castore_crash_child.ts DATA_DIR FIRST_SEED COUNT
 * (COUNT 0 = until killed)
 */
import { create } from "@bufbuild/protobuf";
import { DirectorySchema } from "../proto/gen/snix/castore/protos/castore_pb.ts";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { digestToHex } from "../lib/castore/digest.ts";
import {
  directoryDigestSync,
  directorySize,
} from "../lib/castore/directory.ts";
import { blobForSeed } from "./castore_crash_data.ts";

const [dataDir, first, count] = [
  Deno.args[0],
  Number(Deno.args[1]),
  Number(Deno.args[2]),
];
const blobs = await LocalBlobService.open(dataDir);
const dirs = await LocalDirectoryService.open(dataDir);
const enc = new TextEncoder();
const out = (s: string) => Deno.stdout.writeSync(enc.encode(s + "\n"));
out("ready");
for (let seed = first; count === 0 || seed < first + count; seed++) {
  const data = blobForSeed(seed);
  const w = blobs.put();
  for (let o = 0; o < data.length; o += 100_000) {
    await w.write(data.subarray(o, o + 100_000));
  }
  const digest = await w.close();
  // a two-level tree naming the blob
  const leaf = create(DirectorySchema, {
    files: [{
      name: enc.encode(`f${seed}`),
      digest,
      size: BigInt(data.length),
    }],
  });
  const root = create(DirectorySchema, {
    directories: [{
      name: enc.encode("d"),
      digest: directoryDigestSync(leaf),
      size: directorySize(leaf),
    }],
  });
  const p = dirs.put();
  await p.put(leaf);
  await p.put(root);
  const rootDigest = await p.close();
  out(`done ${seed} ${digestToHex(digest)} ${digestToHex(rootDigest)}`);
}
