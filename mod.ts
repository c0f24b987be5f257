/**
 * snix-ts: Nix store paths in a content-addressed store, served to Nix.
 *
 * The public library API: the service seams and the modules below them.
 *
 * @module
 */
export type { BlobService, BlobWriter, ByteRange, ChunkMeta } from "./lib/castore/blob_service.ts";
export type { DirectoryPutter, DirectoryService } from "./lib/castore/directory_service.ts";
export type { PathInfoService } from "./lib/store/path_info_service.ts";
