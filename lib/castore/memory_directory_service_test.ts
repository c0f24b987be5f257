import { Code } from "@connectrpc/connect";
import { MemoryDirectoryService } from "./memory_directory_service.ts";
import {
  directoryServiceCases,
  fixtures,
  rejectsWith,
} from "./_test_directory_service.ts";
import { directoryDigestSync, encodeDirectory } from "./directory.ts";

directoryServiceCases(
  "MemoryDirectoryService",
  () => Promise.resolve({ svc: new MemoryDirectoryService() }),
);

Deno.test("MemoryDirectoryService: corrupt stored directory is DataLoss", async () => {
  const svc = new MemoryDirectoryService();
  const { A, B } = fixtures();
  const p = svc.put();
  await p.put(A);
  await p.put(B);
  await p.close();
  svc.corruptForTesting(directoryDigestSync(A), encodeDirectory(B));
  await rejectsWith(
    svc.get(directoryDigestSync(A)),
    Code.DataLoss,
    /is corrupt/,
  );
  await rejectsWith(
    (async () => {
      for await (
        const _ of svc.getRecursive(directoryDigestSync(B))
      ) { /* drain */ }
    })(),
    Code.DataLoss,
    /is corrupt/,
  );
});
