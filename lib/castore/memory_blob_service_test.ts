import { MemoryBlobService } from "./memory_blob_service.ts";
import { blobServiceCases } from "./_test_blob_service.ts";

blobServiceCases(
  "MemoryBlobService",
  () => Promise.resolve({ svc: new MemoryBlobService() }),
);
