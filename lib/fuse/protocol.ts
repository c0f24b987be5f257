/**
 * The Linux FUSE kernel protocol (major 7): opcodes, flags and the binary
 * layouts we read and write, all little-endian. Layouts follow the kernel's
 * uapi header `include/uapi/linux/fuse.h`; only the parts a read-only file
 * system needs are here.
 *
 * @module
 */

/** Protocol major version. */
export const FUSE_KERNEL_VERSION = 7;
/** The newest minor version we implement (7.31 layouts; no extensions). */
export const FUSE_KERNEL_MINOR_VERSION = 31;
/** nodeid of the root directory. */
export const FUSE_ROOT_ID = 1n;

/** Request opcodes. */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  COPY_FILE_RANGE: 47,
  TMPFILE: 51,
} as const;

/** Opcodes that would modify the file system: answered with EROFS. */
export const WRITE_OPS: ReadonlySet<number> = new Set([
  Op.SETATTR,
  Op.SYMLINK,
  Op.MKNOD,
  Op.MKDIR,
  Op.UNLINK,
  Op.RMDIR,
  Op.RENAME,
  Op.LINK,
  Op.WRITE,
  Op.SETXATTR,
  Op.REMOVEXATTR,
  Op.CREATE,
  Op.FALLOCATE,
  Op.RENAME2,
  Op.COPY_FILE_RANGE,
  Op.TMPFILE,
]);

/** INIT flags (first word). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  INIT_EXT: 1 << 30,
} as const;

/** OPEN reply flags. */
export const FOPEN_DIRECT_IO = 1 << 0;
/** Keep the page cache on open. */
export const FOPEN_KEEP_CACHE = 1 << 1;
/** Allow the kernel to cache directory listings. */
export const FOPEN_CACHE_DIR = 1 << 3;

/** Linux errno values used in replies (sent negated). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENODATA: 61,
  EPROTO: 71,
} as const;

/** File type bits of `mode`. */
export const S_IFDIR = 0o040000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Symbolic link. */
export const S_IFLNK = 0o120000;
/** dirent `type` values (DT_*). */
export const DT_DIR = 4;
/** Regular file. */
export const DT_REG = 8;
/** Symbolic link. */
export const DT_LNK = 10;

/** Sizes of the fixed structures. */
export const IN_HEADER_SIZE = 40;
/** fuse_out_header. */
export const OUT_HEADER_SIZE = 16;
/** fuse_attr. */
export const ATTR_SIZE = 88;
/** fuse_entry_out. */
export const ENTRY_OUT_SIZE = 128;
/** fuse_attr_out. */
export const ATTR_OUT_SIZE = 104;
/** fuse_open_out. */
export const OPEN_OUT_SIZE = 16;
/** fuse_init_out (minor >= 23). */
export const INIT_OUT_SIZE = 64;
/** fuse_kstatfs. */
export const STATFS_OUT_SIZE = 80;
/** fuse_dirent without the name. */
export const DIRENT_HEADER_SIZE = 24;

/** The parsed fixed header of a request; `body` is what follows it. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

/** Parses the 40-byte request header. */
export function parseInHeader(buf: Uint8Array): InHeader {
  if (buf.byteLength < IN_HEADER_SIZE) {
    throw new Error(`short FUSE request: ${buf.byteLength} bytes`);
  }
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    len: v.getUint32(0, true),
    opcode: v.getUint32(4, true),
    unique: v.getBigUint64(8, true),
    nodeid: v.getBigUint64(16, true),
    uid: v.getUint32(24, true),
    gid: v.getUint32(28, true),
    pid: v.getUint32(32, true),
  };
}

/** Attributes of one inode, as sent in fuse_attr. */
export interface Attr {
  ino: bigint;
  size: number;
  mode: number;
  nlink: number;
  /** Seconds since the epoch for atime, mtime and ctime. */
  time: number;
}

/** Writes a fuse_attr at `off`. */
export function writeAttr(v: DataView, off: number, a: Attr): void {
  v.setBigUint64(off, a.ino, true);
  v.setBigUint64(off + 8, BigInt(a.size), true);
  v.setBigUint64(off + 16, BigInt(Math.ceil(a.size / 512)), true); // blocks
  const t = BigInt(a.time);
  v.setBigUint64(off + 24, t, true); // atime
  v.setBigUint64(off + 32, t, true); // mtime
  v.setBigUint64(off + 40, t, true); // ctime
  // atimensec, mtimensec, ctimensec stay 0 (offsets 48..59)
  v.setUint32(off + 60, a.mode, true);
  v.setUint32(off + 64, a.nlink, true);
  // uid, gid, rdev 0 (offsets 68..79)
  v.setUint32(off + 80, 4096, true); // blksize
  // flags 0 (offset 84)
}

/** Cache validity of an entry or attributes, in seconds. */
export interface Validity {
  entrySec: number;
  attrSec: number;
}

/** Writes a fuse_entry_out (128 bytes) at `off`. */
export function writeEntryOut(
  v: DataView,
  off: number,
  a: Attr,
  valid: Validity,
): void {
  v.setBigUint64(off, a.ino, true); // nodeid
  v.setBigUint64(off + 8, 0n, true); // generation
  v.setBigUint64(off + 16, BigInt(valid.entrySec), true);
  v.setBigUint64(off + 24, BigInt(valid.attrSec), true);
  v.setUint32(off + 32, 0, true);
  v.setUint32(off + 36, 0, true);
  writeAttr(v, off + 40, a);
}

/** Writes a fuse_attr_out (104 bytes) at `off`. */
export function writeAttrOut(
  v: DataView,
  off: number,
  a: Attr,
  attrSec: number,
): void {
  v.setBigUint64(off, BigInt(attrSec), true);
  v.setUint32(off + 8, 0, true);
  v.setUint32(off + 12, 0, true);
  writeAttr(v, off + 16, a);
}

/** The 8-byte aligned size of a dirent record with a name of `nameLen` bytes. */
export function direntSize(nameLen: number): number {
  return (DIRENT_HEADER_SIZE + nameLen + 7) & ~7;
}

/** Writes a fuse_dirent at `off`; returns the padded record size. */
export function writeDirent(
  out: Uint8Array,
  v: DataView,
  off: number,
  ino: bigint,
  nextCookie: number,
  type: number,
  name: Uint8Array,
): number {
  v.setBigUint64(off, ino, true);
  v.setBigUint64(off + 8, BigInt(nextCookie), true);
  v.setUint32(off + 16, name.byteLength, true);
  v.setUint32(off + 20, type, true);
  out.set(name, off + DIRENT_HEADER_SIZE);
  const size = direntSize(name.byteLength);
  out.fill(0, off + DIRENT_HEADER_SIZE + name.byteLength, off + size);
  return size;
}

/** What the kernel offers in INIT. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
}

/** Parses fuse_init_in (16 bytes, or 64 with flags2 from 7.36). */
export function parseInitIn(body: Uint8Array): InitIn {
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  return {
    major: v.getUint32(0, true),
    minor: v.getUint32(4, true),
    maxReadahead: v.getUint32(8, true),
    flags: v.getUint32(12, true),
    flags2: body.byteLength >= 20 ? v.getUint32(16, true) : 0,
  };
}

/** Our INIT answer. */
export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

/** Encodes the full 64-byte fuse_init_out. */
export function encodeInitOut(o: InitOut): Uint8Array {
  const out = new Uint8Array(INIT_OUT_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(0, o.major, true);
  v.setUint32(4, o.minor, true);
  v.setUint32(8, o.maxReadahead, true);
  v.setUint32(12, o.flags >>> 0, true);
  v.setUint16(16, o.maxBackground, true);
  v.setUint16(18, o.congestionThreshold, true);
  v.setUint32(20, o.maxWrite, true);
  v.setUint32(24, o.timeGran, true);
  v.setUint16(28, o.maxPages, true);
  // map_alignment, flags2, max_stack_depth, request_timeout, unused: 0
  return out;
}

/** Notification codes: sent in the `error` field of an out-header with `unique` 0. */
export const NotifyCode = {
  /** FUSE_NOTIFY_STORE: put data into an inode's page cache. */
  STORE: 4,
} as const;

/** fuse_notify_store_out (nodeid, offset, size, padding). */
export const NOTIFY_STORE_OUT_SIZE = 24;

/**
 * A FUSE_NOTIFY_STORE message: out-header (unique 0, code in `error`),
 * fuse_notify_store_out, then the bytes to store at `offset` of inode
 * `nodeid`. The kernel marks a page up to date when the data fills it or
 * ends where the file ends, so a whole small file becomes readable without
 * a READ.
 */
export function encodeNotifyStore(
  nodeid: bigint,
  offset: number,
  data: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(
    OUT_HEADER_SIZE + NOTIFY_STORE_OUT_SIZE + data.byteLength,
  );
  const v = new DataView(out.buffer);
  v.setUint32(0, out.byteLength, true);
  v.setInt32(4, NotifyCode.STORE, true);
  v.setBigUint64(8, 0n, true);
  v.setBigUint64(OUT_HEADER_SIZE, nodeid, true);
  v.setBigUint64(OUT_HEADER_SIZE + 8, BigInt(offset), true);
  v.setUint32(OUT_HEADER_SIZE + 16, data.byteLength, true);
  out.set(data, OUT_HEADER_SIZE + NOTIFY_STORE_OUT_SIZE);
  return out;
}

/** Reads a NUL-terminated name from the start of `body` (a view, not a copy). */
export function cName(body: Uint8Array): Uint8Array {
  const nul = body.indexOf(0);
  return nul < 0 ? body : body.subarray(0, nul);
}
