/**
 * Mounting and unmounting a FUSE file system with plain mount(2) (as root),
 * recognising a stale mount left by a crashed server, and raising the
 * mount's readahead.
 *
 * The serving process must never touch its own mount point synchronously
 * once the kernel waits for it (it would wait for itself), so everything
 * after `mount()` here reads `/proc` and `/sys` only.
 *
 * @module
 */
import {
  existsSync,
  readFileSync,
  realpathSync,
  statfsSync,
  statSync,
  writeFileSync,
} from "node:fs";
import process from "node:process";
import {
  type LibC,
  MNT_DETACH,
  MS_NODEV,
  MS_NOSUID,
  MS_RDONLY,
  O_CLOEXEC,
  O_RDWR,
  OsError,
} from "../runtime/libc.ts";

/** How to mount. */
export interface MountOptions {
  /** Let other users than the mounting one access the file system. */
  allowOther?: boolean;
  /** Clear a stale mount (ENOTCONN) at the mount point with MNT_DETACH instead of failing. */
  forceUnmountStale?: boolean;
  /** The file system's type suffix (`fuse.<subtype>`) and source name. */
  name?: string;
}

/** A clear, user-facing mount failure (no stack trace needed). */
export class MountError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MountError";
  }
}

/** Whether this process may mount FUSE file systems the way we do (root + /dev/fuse). */
export function canMountFuse(): { ok: true } | { ok: false; reason: string } {
  const uid = typeof process.getuid === "function" ? process.getuid() : -1;
  if (uid !== 0) return { ok: false, reason: "not running as root" };
  if (!existsSync("/dev/fuse")) {
    return { ok: false, reason: "/dev/fuse does not exist" };
  }
  return { ok: true };
}

/**
 * Checks the mount point and mounts: returns the `/dev/fuse` fd (the caller
 * must start serving it at once: the kernel sends INIT right away) and the
 * absolute mount point.
 */
export function mountFuse(
  libc: LibC,
  mountpoint: string,
  options: MountOptions = {},
): { fd: number; mountpoint: string } {
  const can = canMountFuse();
  if (!can.ok) {
    throw new MountError(
      `cannot mount ${mountpoint}: ${can.reason}; snix mounts with mount(2), which needs root ` +
        "(CAP_SYS_ADMIN) and /dev/fuse (fusermount3 is not supported)",
    );
  }
  try {
    // statfs always asks the file system; a plain stat of a dead FUSE
    // mount's root may be answered from cached attributes.
    statSync(mountpoint);
    statfsSync(mountpoint);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTCONN") {
      if (!options.forceUnmountStale) {
        throw new MountError(
          `${mountpoint} is a stale FUSE mount (transport endpoint is not connected), ` +
            `probably left by a crashed mount; run \`umount -l ${mountpoint}\` ` +
            "(unmount any overlay on top of it first), or pass --force-unmount-stale",
        );
      }
      try {
        libc.umount2(mountpoint, MNT_DETACH);
      } catch (u) {
        throw new MountError(
          `cannot clear the stale mount at ${mountpoint}: ${
            (u as Error).message
          }`,
        );
      }
      statSync(mountpoint);
    } else if (code === "ENOENT") {
      throw new MountError(`mount point ${mountpoint} does not exist`);
    } else {
      throw new MountError(
        `cannot use mount point ${mountpoint}: ${(e as Error).message}`,
      );
    }
  }
  const abs = realpathSync(mountpoint);
  if (!statSync(abs).isDirectory()) {
    throw new MountError(`mount point ${mountpoint} is not a directory`);
  }
  const name = options.name ?? "snix";
  if (mountEntry(abs)?.fstype === `fuse.${name}`) {
    throw new MountError(
      `${abs} is already a live ${name} mount (another \`snix store mount\` serves it); ` +
        `stop that one or run \`umount ${abs}\` first`,
    );
  }
  const fd = libc.open("/dev/fuse", O_RDWR | O_CLOEXEC);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const data =
    `fd=${fd},rootmode=40000,user_id=${uid},group_id=${gid},default_permissions` +
    (options.allowOther ? ",allow_other" : "");
  try {
    libc.mount(
      name,
      abs,
      `fuse.${name}`,
      MS_NODEV | MS_NOSUID | MS_RDONLY,
      data,
    );
  } catch (e) {
    libc.close(fd);
    if (e instanceof OsError && e.code === "EPERM") {
      throw new MountError(
        `mounting ${abs} failed: permission denied; mount(2) needs root with CAP_SYS_ADMIN`,
      );
    }
    throw new MountError(`mounting ${abs} failed: ${(e as Error).message}`);
  }
  return { fd, mountpoint: abs };
}

/**
 * Unmounts: a normal unmount first, a lazy one (MNT_DETACH) if it is busy.
 * Returns how it went.
 */
export function unmountFuse(
  libc: LibC,
  mountpoint: string,
): "unmounted" | "detached" | "not-mounted" {
  try {
    libc.umount2(mountpoint, 0);
    return "unmounted";
  } catch (e) {
    if (e instanceof OsError && e.code === "EINVAL") return "not-mounted";
    libc.umount2(mountpoint, MNT_DETACH);
    return "detached";
  }
}

/** Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space). */
function unescapeMountinfo(s: string): string {
  return s.replace(
    /\\([0-7]{3})/g,
    (_, o) => String.fromCharCode(parseInt(o, 8)),
  );
}

/** The `major:minor` device of the file system mounted at `mountpoint` (the last one). */
export function mountDevice(mountpoint: string): string | undefined {
  return mountEntry(mountpoint)?.device;
}

/** Device and type of the file system mounted at `mountpoint` (the topmost one). */
export function mountEntry(
  mountpoint: string,
): { device: string; fstype: string } | undefined {
  let found: { device: string; fstype: string } | undefined;
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const f = line.split(" ");
    if (f.length > 4 && unescapeMountinfo(f[4]) === mountpoint) {
      const sep = f.indexOf("-", 6);
      found = { device: f[2], fstype: sep > 0 ? f[sep + 1] : "" };
    }
  }
  return found;
}

/** Whether something is mounted at `mountpoint` (from /proc/self/mountinfo). */
export function isMounted(mountpoint: string): boolean {
  return mountDevice(mountpoint) !== undefined;
}

/**
 * Raises the readahead of the mount's backing device info to `kb` KiB
 * (default 8192); returns false if that was not possible. A READ is at
 * most 1 MiB (max_pages), so a sequential reader keeps several in flight,
 * which the reply workers (./direct_reads.ts) answer in parallel. Cold
 * 1 GiB read, best of 3, twice each: 1 MiB 1.14-1.46 s (one run each),
 * 4 MiB 0.88-0.93 s, 8 MiB 0.80-0.84 s (with 2 MiB routing spans), 16 MiB
 * no better.
 */
export function raiseReadahead(mountpoint: string, kb = 8192): boolean {
  try {
    const dev = mountDevice(mountpoint);
    if (!dev) return false;
    writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, `${kb}\n`);
    return true;
  } catch {
    return false;
  }
}
