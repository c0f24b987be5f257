/**
 * `importNar`: adds a store path from its NAR (what the nix-daemon's
 * AddToStoreNar and `nix copy` need). The NAR is ingested into castore while
 * its size and SHA-256 are checked against the metadata; the PathInfo is put
 * only when everything matched, so a bad NAR leaves no PathInfo.
 *
 * @module
 */
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { ingestNar } from "../castore/ingest_nar.ts";
import type { PathInfoService } from "./path_info_service.ts";
import { fromNixPathInfo, type NixPathInfo } from "./path_info.ts";
import { rememberNar } from "./nar_calculation.ts";

/** The services importNar writes to. */
export interface NarImportServices {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
}

/**
 * Ingests `nar` as the store path `info.path` and records its PathInfo.
 * `info.narHash` (SHA-256) and `info.narSize` (if non-zero) must match the
 * NAR; otherwise throws and records nothing.
 */
export async function importNar(
  nar: ReadableStream<Uint8Array>,
  info: NixPathInfo,
  services: NarImportServices,
): Promise<PathInfo> {
  if (info.narHash.algo !== "sha256") {
    throw new Error(
      `NAR hash of ${info.path} must be sha256, got ${info.narHash.algo}`,
    );
  }
  const r = await ingestNar(nar, services.blobs, services.directories, {
    narSha256: info.narHash.digest,
    narSize: info.narSize ? info.narSize : undefined,
  });
  rememberNar(r.entry, r);
  const pathInfo = fromNixPathInfo({ ...info, narSize: r.narSize }, r.entry);
  return await services.pathInfos.put(pathInfo);
}
