/**
 * Opens the blob, directory and path info services a configuration names.
 * The one place that maps addresses (memory://, a local data directory,
 * grpc+http://, grpc+unix://) to implementations.
 *
 * @module
 */
import type { BlobService } from "../lib/castore/blob_service.ts";
import type { DirectoryService } from "../lib/castore/directory_service.ts";
import type { PathInfoService } from "../lib/store/path_info_service.ts";
import { MemoryPathInfoService } from "../lib/store/memory_path_info_service.ts";
import { LocalPathInfoService } from "../lib/store/local_path_info_service.ts";
import { MemoryBlobService } from "../lib/castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../lib/castore/memory_directory_service.ts";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { GrpcBlobService } from "../lib/grpc/blob_client.ts";
import { GrpcDirectoryService } from "../lib/grpc/directory_client.ts";
import { GrpcPathInfoService } from "../lib/grpc/path_info_client.ts";
import type { Config, ServiceAddr } from "./config.ts";

/** The three services, opened. */
export interface Services {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
  /** Closes all three. */
  close(): Promise<void>;
}

function unsupported(what: string, addr: ServiceAddr): never {
  throw new Error(`${what}: backend "${addr.kind}" is not implemented yet`);
}

/** Opens the services named by `config`. */
export async function openServices(config: Config): Promise<Services> {
  const blobs = await openBlobService(config.blobService);
  const directories = await openDirectoryService(config.directoryService);
  const pathInfos = await openPathInfoService(config.pathInfoService);
  return {
    blobs,
    directories,
    pathInfos,
    async close() {
      await Promise.all([blobs.close?.(), directories.close?.(), pathInfos.close?.()]);
    },
  };
}

/** Opens a blob service from its address. */
export function openBlobService(addr: ServiceAddr): Promise<BlobService> {
  if (addr.kind === "memory") return Promise.resolve(new MemoryBlobService());
  if (addr.kind === "local") return LocalBlobService.open(addr.dir);
  if (addr.kind === "grpc") return Promise.resolve(GrpcBlobService.connect(addr));
  return Promise.resolve(unsupported("blob service", addr));
}

/** Opens a directory service from its address. */
export function openDirectoryService(addr: ServiceAddr): Promise<DirectoryService> {
  if (addr.kind === "memory") return Promise.resolve(new MemoryDirectoryService());
  if (addr.kind === "local") return LocalDirectoryService.open(addr.dir);
  if (addr.kind === "grpc") return Promise.resolve(GrpcDirectoryService.connect(addr));
  return Promise.resolve(unsupported("directory service", addr));
}

/** Opens a path info service from its address. */
export async function openPathInfoService(addr: ServiceAddr): Promise<PathInfoService> {
  if (addr.kind === "memory") return new MemoryPathInfoService();
  if (addr.kind === "grpc") return GrpcPathInfoService.connect(addr);
  if (addr.kind === "local") return await LocalPathInfoService.open(addr.dir);
  return unsupported("path info service", addr);
}
