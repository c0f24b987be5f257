/**
 * snix-ts: Nix store paths in a content-addressed store, served to Nix.
 *
 * The public library API: the service seams and the modules below them.
 *
 * @module
 */
export type {
  BlobService,
  BlobWriter,
  ByteRange,
  ChunkMeta,
} from "./lib/castore/blob_service.ts";
export type {
  DirectoryPutter,
  DirectoryService,
} from "./lib/castore/directory_service.ts";
export type { PathInfoService } from "./lib/store/path_info_service.ts";

// Nix formats (lib/nix): nixbase32, hashes, store paths, NAR, narinfo, signatures.
export { decodeNixBase32, encodeNixBase32 } from "./lib/nix/nixbase32.ts";
export {
  createHasher,
  type Hash,
  type HashAlgo,
  makeHash,
  parseHash,
  printHash,
  printSri,
  sha256,
} from "./lib/nix/hash.ts";
export {
  makeFixedOutputPath,
  makeSourcePath,
  makeStorePath,
  makeTextPath,
  STORE_DIR,
  StorePath,
  validateStorePathName,
} from "./lib/nix/store_path.ts";
export { narChunks, type NarNode, narStream } from "./lib/nix/nar_writer.ts";
export { NarError, type NarEvent, readNar } from "./lib/nix/nar_reader.ts";
export { narNodeFromPath } from "./lib/nix/nar_fs.ts";
export { type NarInfo, parseNarInfo, printNarInfo } from "./lib/nix/narinfo.ts";
export {
  fingerprint,
  PublicKey,
  SecretKey,
  verifyAny,
} from "./lib/nix/signature.ts";

// Store layer (lib/store) and castore ingest/render: PathInfo services and
// helpers, importing trees and NARs, rendering NARs, verification.
export { ingestTree, ingestTreeWithNar } from "./lib/castore/ingest_tree.ts";
export { ingestNar, NarMismatchError } from "./lib/castore/ingest_nar.ts";
export { renderNar } from "./lib/castore/render_nar.ts";
export { MemoryPathInfoService } from "./lib/store/memory_path_info_service.ts";
export { LocalPathInfoService } from "./lib/store/local_path_info_service.ts";
export {
  caToString,
  fromNixPathInfo,
  makePathInfo,
  type NixPathInfo,
  parseCa,
  pathInfoFromNarInfoText,
  pathInfoStorePath,
  pathInfoToNarInfoText,
  toNixPathInfo,
  validatePathInfo,
} from "./lib/store/path_info.ts";
export { calculateNar } from "./lib/store/nar_calculation.ts";
export { importPath } from "./lib/store/import_path.ts";
export { importNar } from "./lib/store/import_nar.ts";
export { type VerifyReport, verifyStore } from "./lib/store/verify.ts";

// Nix worker protocol (lib/wire: codec; lib/daemon: server and a small client).
export {
  FramedSink,
  framedSource,
  Op,
  type ProtocolVersion,
  readValidPathInfo,
  type ValidPathInfo,
  WireError,
  WireReader,
  WireWriter,
  writeValidPathInfo,
} from "./lib/wire/mod.ts";
export {
  listenUnix,
  type RunningDaemon,
  serveStreams,
} from "./lib/daemon/server.ts";
export { DaemonClient, DaemonReplyError } from "./lib/daemon/client.ts";

// gRPC (lib/grpc): the store server and clients implementing the seams.
export {
  createStoreRoutes,
  startStoreServer,
  type StoreBackends,
  type StoreServer,
  type StoreServerOptions,
} from "./lib/grpc/server.ts";
export { GrpcBlobService } from "./lib/grpc/blob_client.ts";
export { GrpcDirectoryService } from "./lib/grpc/directory_client.ts";
export { GrpcPathInfoService } from "./lib/grpc/path_info_client.ts";
export {
  type GrpcAddress,
  type GrpcChannel,
  openGrpcChannel,
  parseGrpcAddress,
} from "./lib/grpc/transport.ts";
