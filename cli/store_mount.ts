/**
 * `snix store mount MNT`: the store as a read-only FUSE file system.
 *
 * @module
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { getLogger } from "@logtape/logtape";
import process from "node:process";
import type { CliContext } from "./context.ts";
import { libc } from "../lib/runtime/libc.ts";
import { onTermination } from "../lib/runtime/signals.ts";
import { CastoreFs } from "../lib/fuse/castore_fs.ts";
import { FuseSession } from "../lib/fuse/session.ts";
import { Op } from "../lib/fuse/protocol.ts";
import { mountFuse, raiseReadahead, unmountFuse } from "../lib/fuse/mount.ts";

const log = getLogger(["snix", "fuse"]);

function intOption(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `must be an integer from ${min} to ${max}`,
      );
    }
    return n;
  };
}

/** The `store mount` command. */
// deno-lint-ignore no-explicit-any
export function storeMountCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("mount")
    .description(
      "mount the store read-only with FUSE: MNT/<hash>-<name> for every store path\n" +
        "(needs root; SIGINT/SIGTERM unmount (lazily if busy) and exit once unused; a second signal exits at once)",
    )
    .argument("<mountpoint>", "an existing directory to mount on")
    .option(
      "--list-root",
      "let READDIR on the mount root list every store path (default: EPERM)",
    )
    .option("--allow-other", "let other users access the mount")
    .option(
      "--show-xattr",
      "expose castore digests as user.snix.castore.* extended attributes",
    )
    .option(
      "--threads <n>",
      "reader loops on /dev/fuse (1-16)",
      intOption(1, 16),
      2,
    )
    .option(
      "--cache-mib <n>",
      "MiB of decompressed chunk data to cache",
      intOption(1, 65536),
      128,
    )
    .option(
      "--explicit-open",
      "answer every OPEN/OPENDIR (default: the kernel opens without asking and keeps its cache)",
    )
    .option(
      "--force-unmount-stale",
      "clear a stale mount left by a crashed `store mount` (lazy unmount) instead of failing",
    )
    .action(async (mnt, opts) => {
      const services = await ctx.services();
      const c = await libc();
      const fs = new CastoreFs(services, {
        listRoot: opts.listRoot ?? false,
        showXattr: opts.showXattr ?? false,
        zeroMessageOpen: !opts.explicitOpen,
        cacheBytes: opts.cacheMib * (1 << 20),
      });
      const { fd, mountpoint } = mountFuse(c, mnt, {
        allowOther: opts.allowOther,
        forceUnmountStale: opts.forceUnmountStale,
      });
      const session = new FuseSession(c, fd, fs, { threads: opts.threads });
      const running = session.run();
      let stopping = false;
      const removeHandlers = onTermination((sig) => {
        if (stopping) {
          // A second signal while a lazily unmounted mount is still in use.
          log.warning(
            "{signal} again: exiting while {mountpoint} is still in use",
            {
              signal: sig,
              mountpoint,
            },
          );
          process.exit(0);
        }
        stopping = true;
        try {
          const how = unmountFuse(c, mountpoint);
          log.info("{signal}: {how} {mountpoint}", {
            signal: sig,
            how,
            mountpoint,
          });
        } catch (e) {
          log.error("unmounting {mountpoint} failed: {error}", {
            mountpoint,
            error: (e as Error).message,
          });
        }
        session.stop();
      });
      await Promise.race([session.ready, running]);
      if (!raiseReadahead(mountpoint)) {
        log.debug("could not raise read_ahead_kb of the mount");
      }
      log.info("mounted the store at {mountpoint}", { mountpoint });
      try {
        await running;
      } finally {
        removeHandlers();
        c.close(fd);
      }
      if (!stopping) log.info("{mountpoint} was unmounted", { mountpoint });
      log.debug("requests answered, by operation: {ops}", {
        ops: requestSummary(session),
      });
    });
}

/** `NAME count (ms)` per FUSE operation the session saw, most frequent first. */
function requestSummary(session: FuseSession): string {
  const names = new Map(Object.entries(Op).map(([k, v]) => [v as number, k]));
  return [...session.opCounts].sort((a, b) => b[1] - a[1]).map(([op, n]) =>
    `${names.get(op) ?? op} ${n} (${
      (session.opTimes.get(op) ?? 0).toFixed(0)
    } ms)`
  ).join(", ");
}
