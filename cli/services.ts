/**
 * Opens the blob, directory and path info services a configuration names.
 * The one place that maps addresses (memory://, a local data directory,
 * grpc+http://, grpc+unix://) to implementations.
 *
 * Backends are imported when first opened, so a subcommand that needs no
 * store (e.g. `snix nar dump`) or only the local one does not pay for loading
 * the gRPC stack.
 *
 * @module
 */
import type { BlobService } from "../lib/castore/blob_service.ts";
import type { DirectoryService } from "../lib/castore/directory_service.ts";
import type { PathInfoService } from "../lib/store/path_info_service.ts";
import type { Config, ServiceAddr } from "./config.ts";

/** The three services, opened. */
export interface Services {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
  /** Closes all three. */
  close(): Promise<void>;
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
      await Promise.all([
        blobs.close?.(),
        directories.close?.(),
        pathInfos.close?.(),
      ]);
    },
  };
}

/** Opens a blob service from its address. */
export async function openBlobService(addr: ServiceAddr): Promise<BlobService> {
  switch (addr.kind) {
    case "memory":
      return new (await import("../lib/castore/memory_blob_service.ts"))
        .MemoryBlobService();
    case "local":
      return await (await import("../lib/castore/local_blob_service.ts"))
        .LocalBlobService.open(
          addr.dir,
        );
    case "grpc":
      return (await import("../lib/grpc/blob_client.ts")).GrpcBlobService
        .connect(addr);
  }
}

/** Opens a directory service from its address. */
export async function openDirectoryService(
  addr: ServiceAddr,
): Promise<DirectoryService> {
  switch (addr.kind) {
    case "memory":
      return new (await import("../lib/castore/memory_directory_service.ts"))
        .MemoryDirectoryService();
    case "local":
      return await (await import("../lib/castore/local_directory_service.ts"))
        .LocalDirectoryService.open(addr.dir);
    case "grpc":
      return (await import("../lib/grpc/directory_client.ts"))
        .GrpcDirectoryService.connect(addr);
  }
}

/** Opens a path info service from its address. */
export async function openPathInfoService(
  addr: ServiceAddr,
): Promise<PathInfoService> {
  switch (addr.kind) {
    case "memory":
      return new (await import("../lib/store/memory_path_info_service.ts"))
        .MemoryPathInfoService();
    case "local":
      return await (await import("../lib/store/local_path_info_service.ts"))
        .LocalPathInfoService
        .open(addr.dir);
    case "grpc":
      return (await import("../lib/grpc/path_info_client.ts"))
        .GrpcPathInfoService.connect(addr);
  }
}
