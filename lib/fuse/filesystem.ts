/**
 * What a read-only file system implements for {@linkcode FuseSession}:
 * inode-level operations with errors as {@linkcode FuseError}.
 *
 * @module
 */
import type { Attr } from "./protocol.ts";

/** An operation failed with this (positive) errno. */
export class FuseError extends Error {
  /** Positive errno sent (negated) to the kernel. */
  readonly errno: number;
  constructor(errno: number, message?: string) {
    super(message ?? `errno ${errno}`);
    this.name = "FuseError";
    this.errno = errno;
  }
}

/** One directory entry with the attributes of its target. */
export interface DirEntry {
  /** Name bytes (no `/`, no NUL). */
  name: Uint8Array;
  /** Attributes; `attr.ino` is the entry's inode. */
  attr: Attr;
  /** Whether READDIRPLUS may hand this entry to the kernel as a lookup (false for `.` and `..`). */
  lookup: boolean;
}

/** An opened file or directory. */
export interface OpenResult {
  /** File handle the kernel passes back on READ/READDIR/RELEASE. */
  fh: bigint;
  /** FOPEN_* flags. */
  flags: number;
}

/** File system statistics for STATFS. */
export interface StatFs {
  blocks: number;
  files: number;
  bsize: number;
  namelen: number;
}

/**
 * What the session lets a file system send to the kernel unasked. Calls
 * never block the caller's thread (a notification may wait in the kernel
 * for a page lock that only our own reply to a READ releases).
 */
export interface FuseNotifier {
  /**
   * Stores `data` at `offset` in the page cache of inode `ino` (which the
   * kernel must know, from a LOOKUP or READDIRPLUS reply it has processed):
   * resolves true if the kernel took it, false otherwise (for instance the
   * inode is not, or no longer, known).
   */
  store(ino: bigint, offset: number, data: Uint8Array): Promise<boolean>;
}

/**
 * The device as the session lets a file system answer READs itself (see
 * {@linkcode FuseFilesystem.readDirect}).
 */
export interface FuseDevice {
  /** The `/dev/fuse` fd: a reply is one write(2)/writev(2) of header + data. */
  readonly fd: number;
  /**
   * Answers READ `unique` the usual way (through
   * {@linkcode FuseFilesystem.read}), for one the file system took over and
   * then could not answer.
   */
  read(unique: bigint, ino: bigint, offset: number, size: number): void;
}

/** A read-only file system served over FUSE. All inode numbers are `bigint`. */
export interface FuseFilesystem {
  /** Seconds the kernel may cache names and attributes. */
  readonly entryTimeout: number;
  /**
   * Finds `name` in directory `parent`. This and the other lookups may
   * answer synchronously (the session then replies without a promise turn);
   * errors are thrown or rejected as {@linkcode FuseError}.
   */
  lookup(parent: bigint, name: Uint8Array): Attr | Promise<Attr>;
  /** Attributes of an inode. */
  getattr(ino: bigint): Attr | Promise<Attr>;
  /** A symlink's target. */
  readlink(ino: bigint): Uint8Array | Promise<Uint8Array>;
  /** Opens a file (`flags` are the open(2) flags). */
  open(ino: bigint, flags: number): Promise<OpenResult>;
  /**
   * Up to `size` bytes at `offset` (fewer only at the end of the file), in
   * one array or as consecutive parts (sent as they are, with one writev).
   */
  read(
    ino: bigint,
    fh: bigint,
    offset: number,
    size: number,
  ): Uint8Array | Uint8Array[] | Promise<Uint8Array | Uint8Array[]>;
  /**
   * Answers a READ itself, writing the reply to the device given by
   * {@linkcode attachDevice} (from any thread), or declines: false (or a
   * promise of false) and the session calls {@linkcode read}.
   */
  readDirect?(
    ino: bigint,
    offset: number,
    size: number,
    unique: bigint,
  ): boolean | Promise<boolean>;
  /**
   * Called once when INIT arrives (before {@linkcode prepare}), where the
   * session allows {@linkcode readDirect}.
   */
  attachDevice?(device: FuseDevice): void;
  /** Closes a file handle. */
  release(ino: bigint, fh: bigint): void;
  /** Opens a directory. */
  opendir(ino: bigint): Promise<OpenResult>;
  /** The entries of an opened directory from position `offset` on (0 = start). */
  readdir(
    ino: bigint,
    fh: bigint,
    offset: number,
  ): DirEntry[] | Promise<DirEntry[]>;
  /** Closes a directory handle. */
  releasedir(ino: bigint, fh: bigint): void;
  /** An extended attribute's value (ENOSYS when xattrs are off, ENODATA if absent). */
  getxattr(ino: bigint, name: Uint8Array): Promise<Uint8Array>;
  /** The extended attribute names of an inode. */
  listxattr(ino: bigint): Promise<Uint8Array[]>;
  /** File system statistics. */
  statfs(): StatFs;
  /** The kernel dropped `nlookup` references to `ino`. */
  forget?(ino: bigint, nlookup: bigint): void;
  /**
   * Called once when the kernel's INIT arrives, which is answered (and the
   * mount usable) only once this settles: start threads and load indexes
   * the first requests would otherwise wait for.
   */
  prepare?(): Promise<void>;
  /** Called once when the session ends: release threads and caches. */
  destroy?(): void;
  /** Called once after INIT where the session can send notifications. */
  attachNotifier?(notifier: FuseNotifier): void;
  /**
   * Does a small piece of background work (tens of microseconds, for
   * instance fetching one directory ahead of a walk); returns whether more
   * is waiting. The session calls it between requests while none waits.
   */
  idle?(): boolean;
  /**
   * Whether work of its own is under way (reads ahead, pushes): then the
   * session does not wait for requests on the main thread, where it would
   * hold that work up (see `direct` in ./session.ts).
   */
  busy?(): boolean;
}
