/**
 * `importPath`: adds a file system tree to the store as `nix-store --add`
 * does. One pass over the tree ingests it into castore and hashes its NAR
 * serialisation; the store path is the source path of that hash, and the
 * PathInfo records the NAR size and hash and the content address
 * `fixed:r:sha256:<nar hash>` (what Nix records for `nix-store --add`).
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import {
  ingestTreeWithNar,
  type ProgressCallback,
} from "../castore/ingest_tree.ts";
import { makeSourcePath, validateStorePathName } from "../nix/store_path.ts";
import { encodeNixBase32 } from "../nix/nixbase32.ts";
import type { PathInfoService } from "./path_info_service.ts";
import { makePathInfo } from "./path_info.ts";
import { rememberNar } from "./nar_calculation.ts";

/** The services importPath writes to. */
export interface ImportServices {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
}

/** NAR pieces smaller than a quarter of this are hashed in batches of it. */
const GATHER = 256 << 10;

/**
 * Imports the tree at `fsPath` under `name` (a valid store path name) and
 * returns the recorded PathInfo. The PathInfo is put only after everything
 * it points to is stored.
 */
export async function importPath(
  fsPath: string,
  name: string,
  services: ImportServices,
  onProgress?: ProgressCallback,
): Promise<PathInfo> {
  try {
    validateStorePathName(name);
  } catch (e) {
    throw new Error(`cannot import ${fsPath}: ${(e as Error).message}`);
  }
  // Inline on purpose: ../nix/threaded_hasher.ts (a second thread) was
  // tried here and cost as much main-thread time in postMessage and ring
  // copies as the ~1 s/GiB of hashing it moved (the import's NAR comes in
  // many small pieces), and its worker added ~15-20 MiB of peak RSS.
  const h = createHash("sha256");
  let narSize = 0;
  // Small NAR pieces (headers, small files) are gathered before hashing:
  // every update call costs ~10 us of bindings, more than hashing 4 KiB.
  const gather = new Uint8Array(GATHER);
  let gathered = 0;
  const flush = () => {
    if (gathered > 0) h.update(gather.subarray(0, gathered));
    gathered = 0;
  };
  const entry = await ingestTreeWithNar(
    fsPath,
    services.blobs,
    services.directories,
    (chunk) => {
      narSize += chunk.length;
      if (chunk.length >= GATHER >> 2) {
        flush();
        h.update(chunk);
        return;
      }
      if (gathered + chunk.length > GATHER) flush();
      gather.set(chunk, gathered);
      gathered += chunk.length;
    },
    onProgress,
  );
  flush();
  const narSha256 = new Uint8Array(h.digest());
  rememberNar(entry, { narSize, narSha256 });
  const storePath = makeSourcePath(narSha256, name, []);
  const info = makePathInfo({
    entry,
    storePath,
    narSize,
    narSha256,
    ca: `fixed:r:sha256:${encodeNixBase32(narSha256)}`,
  });
  return await services.pathInfos.put(info);
}
