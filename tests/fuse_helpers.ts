/**
 * Shared pieces of the FUSE tests: when to skip, an in-process mount over
 * given services that is always unmounted, and running shell commands
 * asynchronously (the test process serves the mount itself, so it must never
 * block on it).
 *
 * @module
 */
import { libc } from "../lib/runtime/libc.ts";
import {
  CastoreFs,
  type CastoreFsOptions,
  type CastoreServices,
} from "../lib/fuse/castore_fs.ts";
import { FuseSession } from "../lib/fuse/session.ts";
import {
  canMountFuse,
  isMounted,
  mountFuse,
  raiseReadahead,
  unmountFuse,
} from "../lib/fuse/mount.ts";

/** Why FUSE tests cannot run here, or undefined if they can. */
export function fuseSkipReason(): string | undefined {
  const can = canMountFuse();
  return can.ok
    ? undefined
    : `FUSE tests skipped: ${can.reason} (they need root and /dev/fuse)`;
}

/** Logs the skip reason once per file and returns whether to ignore the tests. */
export function skipFuse(): boolean {
  const why = fuseSkipReason();
  if (why) console.warn(why);
  return why !== undefined;
}

/** Result of a shell command. */
export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `bash -c script` without blocking the event loop. */
export async function sh(
  script: string,
  env?: Record<string, string>,
): Promise<ShResult> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** Runs a shell command and throws with its stderr unless it exits 0. */
export async function shOk(script: string): Promise<string> {
  const r = await sh(script);
  if (r.code !== 0) {
    throw new Error(`\`${script}\` exited ${r.code}: ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** Lazily unmounts whatever is left at `mnt` (overlays on top first). */
export async function forceUnmount(mnt: string): Promise<void> {
  for (let i = 0; i < 5 && isMounted(mnt); i++) {
    await sh(`umount -l '${mnt}' 2>/dev/null`);
  }
}

/**
 * Mounts the castore file system over `services` at a fresh temp dir in this
 * process, runs `fn`, and always unmounts (also when `fn` fails).
 */
export async function withMount(
  services: CastoreServices,
  options: CastoreFsOptions & { threads?: number; direct?: boolean },
  fn: (
    mnt: string,
    served: { fs: CastoreFs; session: FuseSession },
  ) => Promise<void>,
): Promise<void> {
  const c = await libc();
  const mnt = await Deno.makeTempDir({ prefix: "snix-fuse-mnt-" });
  const { fd, mountpoint } = mountFuse(c, mnt);
  const fs = new CastoreFs(services, options);
  const session = new FuseSession(c, fd, fs, {
    threads: options.threads ?? 3,
    direct: options.direct,
  });
  const running = session.run();
  try {
    await session.ready;
    raiseReadahead(mountpoint); // as `snix store mount` does
    await fn(mountpoint, { fs, session });
  } finally {
    try {
      unmountFuse(c, mountpoint);
    } catch {
      await forceUnmount(mountpoint);
    }
    session.stop();
    await running;
    c.close(fd);
    await Deno.remove(mnt).catch(() => {});
  }
}
