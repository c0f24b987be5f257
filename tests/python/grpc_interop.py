#!/usr/bin/python3
"""Interop check of `snix store daemon` with python grpcio (Debian's).

Usage: grpc_interop.py STUBS_DIR TARGET MODE
  STUBS_DIR  where grpc_tools.protoc wrote the stubs generated from proto/
  TARGET     a grpc target: 127.0.0.1:PORT or unix:/path.sock
  MODE       rw (full round trip) or ro (daemon started with --read-only)

Expected digests come from independent tools: BLAKE3 from `b3sum`, the NAR
hash and size from `nix-store --dump` of the same tree written to disk.
Prints one line per check group and "OK <n> checks"; exits 1 on the first
failed check.
"""
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile

STUBS, TARGET, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, STUBS)

import grpc  # noqa: E402  (Debian's python3-grpcio)
from snix.castore.protos import castore_pb2  # noqa: E402
from snix.castore.protos import rpc_blobstore_pb2 as bpb  # noqa: E402
from snix.castore.protos import rpc_blobstore_pb2_grpc as bgrpc  # noqa: E402
from snix.castore.protos import rpc_directory_pb2 as dpb  # noqa: E402
from snix.castore.protos import rpc_directory_pb2_grpc as dgrpc  # noqa: E402
from snix.store.protos import pathinfo_pb2 as ppb  # noqa: E402
from snix.store.protos import rpc_pathinfo_pb2 as rpb  # noqa: E402
from snix.store.protos import rpc_pathinfo_pb2_grpc as rgrpc  # noqa: E402

# The stubs' grpc/health/v1 package is shadowed by the real `grpc` module:
# load the messages from the file and call Check generically.
_spec = importlib.util.spec_from_file_location(
    "health_pb2", os.path.join(STUBS, "grpc/health/v1/health_pb2.py"))
health_pb2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health_pb2)

checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


def expect_code(fn, code, what):
    try:
        r = fn()
        if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
            for _ in r:
                pass
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: expected {code}, got {e.code()} ({e.details()})")
        check(bool(e.details()), f"{what}: error has a message")
        return e
    check(False, f"{what}: expected {code}, call succeeded")


def b3sum(data: bytes) -> bytes:
    out = subprocess.run(["b3sum", "--no-names", "-"], input=data, capture_output=True, check=True)
    return bytes.fromhex(out.stdout.decode().strip())


NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32_decode(s: str) -> bytes:
    """Store-path hash part (nixbase32, least significant digit last) to 20 bytes."""
    n = len(s) * 5 // 8
    out = bytearray(n)
    for i, ch in enumerate(reversed(s)):
        d = NIX32.index(ch)
        b = i * 5
        out[b // 8] |= (d << (b % 8)) & 0xFF
        if b // 8 + 1 < n:
            out[b // 8 + 1] |= d >> (8 - b % 8)
    return bytes(out)


def data_bytes(n: int, seed: int) -> bytes:
    out = bytearray(n)
    x = seed
    for i in range(0, n, 4):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i:i + 4] = x.to_bytes(4, "little")[: n - i]
    return bytes(out)


MAX = 32 << 20
channel = grpc.insecure_channel(TARGET, options=[
    ("grpc.max_receive_message_length", MAX), ("grpc.max_send_message_length", MAX)])
grpc.channel_ready_future(channel).result(timeout=15)
blobs = bgrpc.BlobServiceStub(channel)
dirs = dgrpc.DirectoryServiceStub(channel)
pis = rgrpc.PathInfoServiceStub(channel)
health = channel.unary_unary(
    "/grpc.health.v1.Health/Check",
    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
    response_deserializer=health_pb2.HealthCheckResponse.FromString)

# --- Health -----------------------------------------------------------------
SERVING = health_pb2.HealthCheckResponse.SERVING
check(health(health_pb2.HealthCheckRequest()).status == SERVING, "health: server SERVING")
for svc in ["snix.castore.v1.BlobService", "snix.castore.v1.DirectoryService",
            "snix.store.v1.PathInfoService"]:
    check(health(health_pb2.HealthCheckRequest(service=svc)).status == SERVING, f"health: {svc}")
expect_code(lambda: health(health_pb2.HealthCheckRequest(service="no.such.Service")),
            grpc.StatusCode.NOT_FOUND, "health: unknown service")
print("health ok", flush=True)

# --- bad arguments and missing things (both modes) ---------------------------
missing = b3sum(b"no such blob " + MODE.encode())
expect_code(lambda: blobs.Stat(bpb.StatBlobRequest(digest=missing)), grpc.StatusCode.NOT_FOUND,
            "Stat missing")
expect_code(lambda: blobs.Read(bpb.ReadBlobRequest(digest=missing)), grpc.StatusCode.NOT_FOUND,
            "Read missing")
expect_code(lambda: blobs.Stat(bpb.StatBlobRequest(digest=b"short")), grpc.StatusCode.INVALID_ARGUMENT,
            "Stat 5-byte digest")
expect_code(lambda: blobs.Read(bpb.ReadBlobRequest(digest=b"x" * 31)), grpc.StatusCode.INVALID_ARGUMENT,
            "Read 31-byte digest")
expect_code(lambda: dirs.Get(dpb.GetDirectoryRequest(digest=missing)), grpc.StatusCode.NOT_FOUND,
            "Directory Get missing")
expect_code(lambda: dirs.Get(dpb.GetDirectoryRequest(digest=missing, recursive=True)),
            grpc.StatusCode.NOT_FOUND, "Directory Get recursive missing")
expect_code(lambda: dirs.Get(dpb.GetDirectoryRequest(digest=b"x" * 33)),
            grpc.StatusCode.INVALID_ARGUMENT, "Directory Get 33-byte digest")
expect_code(lambda: pis.Get(rpb.GetPathInfoRequest(by_output_hash=b"\x01" * 20)),
            grpc.StatusCode.NOT_FOUND, "PathInfo Get missing")
expect_code(lambda: pis.Get(rpb.GetPathInfoRequest(by_output_hash=b"\x01" * 19)),
            grpc.StatusCode.INVALID_ARGUMENT, "PathInfo Get 19-byte hash")
print("errors ok", flush=True)

if MODE == "ro":
    def put_blob():
        return blobs.Put(iter([bpb.BlobChunk(data=b"read-only")]))
    expect_code(put_blob, grpc.StatusCode.PERMISSION_DENIED, "Blob Put read-only")
    leaf = castore_pb2.Directory()
    expect_code(lambda: dirs.Put(iter([leaf])), grpc.StatusCode.PERMISSION_DENIED,
                "Directory Put read-only")
    expect_code(lambda: pis.Put(ppb.PathInfo()), grpc.StatusCode.PERMISSION_DENIED,
                "PathInfo Put read-only")
    # Reads still work: the blob the rw run stored.
    if len(sys.argv) > 4:
        known = bytes.fromhex(sys.argv[4])
        got = b"".join(m.data for m in blobs.Read(bpb.ReadBlobRequest(digest=known)))
        check(b3sum(got) == known, "read-only Read of an existing blob")
    print(f"OK {checks} checks", flush=True)
    sys.exit(0)

# --- BlobService ---------------------------------------------------------------
blob = data_bytes((3 << 20) + 17, 11)
want = b3sum(blob)
pieces = [bpb.BlobChunk(data=blob[i:i + 100_000]) for i in range(0, len(blob), 100_000)]
resp = blobs.Put(iter(pieces))
check(resp.digest == want, "Put answers the BLAKE3 of the bytes (b3sum)")
blobs.Stat(bpb.StatBlobRequest(digest=want))
stat = blobs.Stat(bpb.StatBlobRequest(digest=want, send_chunks=True))
if len(stat.chunks) > 0:
    check(sum(c.size for c in stat.chunks) == len(blob), "chunk sizes add up to the blob size")
    # Every chunk reads by its own digest (snix's chunk-aware clients do this).
    joined = b""
    for c in stat.chunks:
        cb = b"".join(m.data for m in blobs.Read(bpb.ReadBlobRequest(digest=c.digest)))
        check(len(cb) == c.size and b3sum(cb) == c.digest, "a chunk reads by its digest")
        joined += cb
    check(joined == blob, "chunks concatenate to the blob")
msgs = [m.data for m in blobs.Read(bpb.ReadBlobRequest(digest=want))]
check(b"".join(msgs) == blob, "Read returns the bytes")
check(max(len(m) for m in msgs) <= 1 << 20, "Read messages are at most 1 MiB")
check(all(len(m) >= 64 << 10 for m in msgs[:-1]), "Read messages are not tiny")
empty = blobs.Put(iter([]))
check(empty.digest == b3sum(b""), "Put of nothing is the empty blob")
check(b"".join(m.data for m in blobs.Read(bpb.ReadBlobRequest(digest=empty.digest))) == b"",
      "Read of the empty blob")
print(f"blob ok ({len(msgs)} messages, {len(stat.chunks)} chunks)", flush=True)

# --- DirectoryService -----------------------------------------------------------
small = b"hello from python\n"
small_digest = blobs.Put(iter([bpb.BlobChunk(data=small)])).digest
check(small_digest == b3sum(small), "small blob digest")
leaf = castore_pb2.Directory(
    files=[castore_pb2.FileEntry(name=b"big", digest=want, size=len(blob)),
           castore_pb2.FileEntry(name=b"hello.txt", digest=small_digest, size=len(small),
                                 executable=True)],
    symlinks=[castore_pb2.SymlinkEntry(name=b"link", target=b"hello.txt")])
leaf_size = 2 * 3  # snix's size rule: 2 per entry (+ child sizes for directories)
leaf_digest = b3sum(leaf.SerializeToString())
root = castore_pb2.Directory(
    directories=[castore_pb2.DirectoryEntry(name=b"a", digest=leaf_digest, size=leaf_size),
                 castore_pb2.DirectoryEntry(name=b"b", digest=leaf_digest, size=leaf_size)],
    files=[castore_pb2.FileEntry(name=b"c", digest=small_digest, size=len(small))])
root_size = 2 * 3 + 2 * leaf_size
root_digest = b3sum(root.SerializeToString())
put = dirs.Put(iter([leaf, root]))
check(put.root_digest == root_digest, "Directory Put answers the root digest (b3sum of the encoding)")
got = list(dirs.Get(dpb.GetDirectoryRequest(digest=root_digest)))
check(len(got) == 1 and got[0] == root, "Directory Get (non-recursive) returns the root only")
got = list(dirs.Get(dpb.GetDirectoryRequest(digest=root_digest, recursive=True)))
check([b3sum(d.SerializeToString()) for d in got] == [root_digest, leaf_digest],
      "recursive Get: root first, each directory once")
# Bad directories.
unsorted = castore_pb2.Directory(files=[
    castore_pb2.FileEntry(name=b"z", digest=small_digest, size=len(small)),
    castore_pb2.FileEntry(name=b"a", digest=small_digest, size=len(small))])
e = expect_code(lambda: dirs.Put(iter([unsorted])), grpc.StatusCode.INVALID_ARGUMENT,
                "Directory Put unsorted")
check("sorted" in e.details(), f"message says what is wrong: {e.details()}")
expect_code(lambda: dirs.Put(iter([castore_pb2.Directory(
    files=[castore_pb2.FileEntry(name=b"a/b", digest=small_digest, size=1)])])),
    grpc.StatusCode.INVALID_ARGUMENT, "Directory Put name with a slash")
orphan_child = castore_pb2.Directory(symlinks=[castore_pb2.SymlinkEntry(name=b"x", target=b"y")])
orphan_parent = castore_pb2.Directory(directories=[castore_pb2.DirectoryEntry(
    name=b"d", digest=b3sum(orphan_child.SerializeToString()), size=2)])
e = expect_code(lambda: dirs.Put(iter([orphan_parent, orphan_child])),
                grpc.StatusCode.INVALID_ARGUMENT, "Directory Put parent before child")
expect_code(lambda: dirs.Put(iter([castore_pb2.Directory(directories=[castore_pb2.DirectoryEntry(
    name=b"d", digest=leaf_digest, size=leaf_size + 1)])])),
    grpc.StatusCode.INVALID_ARGUMENT, "Directory Put wrong child size")
expect_code(lambda: dirs.Put(iter([])), grpc.StatusCode.INVALID_ARGUMENT, "Directory Put nothing")
print("directory ok", flush=True)

# --- PathInfoService ------------------------------------------------------------
with tempfile.TemporaryDirectory() as tmp:
    tree = os.path.join(tmp, "tree")
    for sub in ["a", "b"]:
        os.makedirs(os.path.join(tree, sub))
        with open(os.path.join(tree, sub, "big"), "wb") as f:
            f.write(blob)
        with open(os.path.join(tree, sub, "hello.txt"), "wb") as f:
            f.write(small)
        os.chmod(os.path.join(tree, sub, "hello.txt"), 0o755)
        os.symlink("hello.txt", os.path.join(tree, sub, "link"))
    with open(os.path.join(tree, "c"), "wb") as f:
        f.write(small)
    nar = subprocess.run(["nix-store", "--dump", tree], capture_output=True, check=True).stdout
nar_sha256, nar_size = hashlib.sha256(nar).digest(), len(nar)

hash_part = "00bgd045z0d4icpbc2yyz4gx48ak44la"
name = f"{hash_part}-python-interop".encode()
entry = castore_pb2.Entry(directory=castore_pb2.DirectoryEntry(name=name, digest=root_digest,
                                                               size=root_size))
calc = pis.CalculateNAR(entry)
check(calc.nar_size == nar_size and calc.nar_sha256 == nar_sha256,
      "CalculateNAR equals nix-store --dump of the same tree")
info = ppb.PathInfo(entry=entry, narinfo=ppb.NARInfo(nar_size=nar_size, nar_sha256=nar_sha256))
stored = pis.Put(info)
check(stored.entry == entry, "PathInfo Put returns the entry")
got = pis.Get(rpb.GetPathInfoRequest(by_output_hash=nix32_decode(hash_part)))
check(got.entry == entry and got.narinfo.nar_sha256 == nar_sha256, "PathInfo Get by output hash")
listed = [p for p in pis.List(rpb.ListPathInfoRequest()) if p.entry.directory.name == name]
check(len(listed) == 1, "List streams the stored PathInfo")

def bad(**kw):
    p = ppb.PathInfo()
    p.CopyFrom(info)
    for k, v in kw.items():
        if k == "name":
            p.entry.directory.name = v
        elif k == "digest":
            p.entry.directory.digest = v
        elif k == "sha":
            p.narinfo.nar_sha256 = v
        elif k == "sig":
            p.narinfo.signatures.add(name="cache.example.org-1", data=v)
        elif k == "refs":
            p.references.extend(v)
            p.narinfo.reference_names.extend(["00bgd045z0d4icpbc2yyz4gx48ak44la-x"] * len(v))
    return p


e = expect_code(lambda: pis.Put(bad(digest=missing)), grpc.StatusCode.FAILED_PRECONDITION,
                "PathInfo Put with the root missing in castore")
check("not in the directory service" in e.details(), e.details())
expect_code(lambda: pis.Put(bad(name=b"not-a-store-path")), grpc.StatusCode.INVALID_ARGUMENT,
            "PathInfo Put with a bad store path name")
expect_code(lambda: pis.Put(bad(sha=b"\0" * 31)), grpc.StatusCode.INVALID_ARGUMENT,
            "PathInfo Put with a 31-byte nar_sha256")
expect_code(lambda: pis.Put(bad(refs=[b"\0" * 19])), grpc.StatusCode.INVALID_ARGUMENT,
            "PathInfo Put with a 19-byte reference")
expect_code(lambda: pis.Put(bad(sig=b"\0" * 10)), grpc.StatusCode.INVALID_ARGUMENT,
            "PathInfo Put with a 10-byte signature")
check(pis.Put(bad(sig=b"\1" * 64)).narinfo.signatures[0].data == b"\1" * 64,
      "PathInfo Put keeps a 64-byte signature")
expect_code(lambda: pis.Put(ppb.PathInfo()), grpc.StatusCode.INVALID_ARGUMENT, "PathInfo Put empty")
expect_code(lambda: pis.CalculateNAR(castore_pb2.Entry(directory=castore_pb2.DirectoryEntry(
    name=b"x", digest=missing, size=0))), grpc.StatusCode.NOT_FOUND, "CalculateNAR of a missing tree")
print("pathinfo ok", flush=True)
print(f"BLOB {want.hex()}", flush=True)
print(f"OK {checks} checks", flush=True)
