/**
 * Bun worker behind `LibC.reader`: blocking `read`s of one fd, each message
 * posted to the parent (transferred), `null` once the device is gone.
 *
 * @module
 */
// deno-lint-ignore no-explicit-any
type Any = any;
const scope: Any = globalThis;

scope.onmessage = async (e: MessageEvent) => {
  const { fd, bufferSize } = e.data as { fd: number; bufferSize: number };
  const ffi: Any = await import(["bun", "ffi"].join(":"));
  const { dlopen, FFIType, read: peek } = ffi;
  const lib = dlopen("libc.so.6", {
    read: {
      args: [FFIType.i32, FFIType.ptr, FFIType.u64],
      returns: FFIType.i64,
    },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  const buf = new Uint8Array(bufferSize);
  for (;;) {
    const n = Number(lib.symbols.read(fd, buf, BigInt(bufferSize)));
    if (n > 0) {
      const msg = buf.slice(0, n);
      scope.postMessage(msg, [msg.buffer]);
      continue;
    }
    const errno = n < 0 ? peek.i32(lib.symbols.__errno_location(), 0) : 0;
    // EINTR, EAGAIN, ENOENT (a request interrupted before we read it): retry.
    if (n < 0 && (errno === 4 || errno === 11 || errno === 2)) continue;
    scope.postMessage(null);
    break;
  }
};
