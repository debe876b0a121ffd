#!/usr/bin/env python3
"""Writes the seed corpus, Fuzz/corpus/<target>/: a few small well-formed (and a few
deliberately broken) inputs per target, in the layout each target's `run` reads.
Re-run after changing an input layout; libFuzzer grows the corpus from here."""
import os, shutil, struct

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")

def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))

# --- virtqueue: [shape, flags] + guest memory image (descriptor table at 0, avail ring at 0x1000).
def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)

def ring_image(descs, heads, avail_flags=0, used_event=0, size=16):
    mem = bytearray(0x1000 + 6 + 2 * size)
    for i, d in enumerate(descs):
        mem[16 * i:16 * i + 16] = d
    struct.pack_into("<HH", mem, 0x1000, avail_flags, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1004 + 2 * i, h)
    struct.pack_into("<H", mem, 0x1004 + 2 * size, used_event)
    return bytes(mem)

NEXT, WRITE = 1, 2
two_chains = ring_image([desc(0x4000, 64, NEXT, 1), desc(0x5000, 128, WRITE, 0), desc(0x6000, 16, WRITE, 0)], [0, 2])
put("virtqueue", "two-chains", [4, 0] + list(two_chains))
put("virtqueue", "event-index", [4, 1] + list(two_chains))
put("virtqueue", "undo-pop", [4, 2 | 4] + list(two_chains))
put("virtqueue", "descriptor-loop", [4, 0] + list(ring_image([desc(0x4000, 8, NEXT, 0)], [0])))
put("virtqueue", "readable-after-writable", [4, 0] + list(ring_image([desc(0x4000, 8, NEXT | WRITE, 1), desc(0x5000, 8, 0, 0)], [0])))
put("virtqueue", "avail-jump", [4, 0] + list(ring_image([desc(0x4000, 8, 0, 0)], [0] * 17)))

# --- block/net/vsock chains (ChainLayout): per chain a count byte (low 2 bits + 1), per
# descriptor a kind byte (bit 0 writable, (kind >> 1) % 64 + 1 scales the length byte),
# the length byte, and a readable descriptor's bytes.
def chain(*descriptors):
    out = [len(descriptors) - 1]
    for writable, length, data in descriptors:
        scale = 1
        while length // scale > 255 or length % scale:
            scale += 1
        out += [(int(writable) | ((scale - 1) << 1)), length // scale]
        if not writable:
            out += list(data if data is not None else bytes(length))
    return out

def blk_header(kind, sector):
    return struct.pack("<IIQ", kind, 0, sector)

read = chain((False, 16, blk_header(0, 1)), (True, 512, None), (True, 1, None))
write = chain((False, 16, blk_header(1, 2)), (False, 512, bytes(range(256)) * 2), (True, 1, None))
flush = chain((False, 16, blk_header(4, 0)), (True, 1, None))
get_id = chain((False, 16, blk_header(8, 0)), (True, 20, None), (True, 1, None))
put("block", "read-write-flush-id", [3, 0, 0] + read + write + flush + get_id)
put("block", "event-index-many-reads", [0x83, 0x10, 0] + read * 6)
put("block", "out-of-range-and-unknown", [3, 0, 0] + chain((False, 16, blk_header(0, 1 << 40)), (True, 512, None), (True, 1, None))
    + chain((False, 16, blk_header(77, 0)), (True, 1, None)))
put("block", "no-status-byte", [3, 0, 0] + chain((False, 16, blk_header(0, 0))))

# --- net: feature mask u32, shape (rx size 1 << (1 + shape % 8), host frames shape >> 5),
# host frames (u16 length + bytes), tx chain count, tx chains, rx chains.
vnet = bytes(12)
frame = bytes([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0]) + bytes(46)
host_frames = []
for _ in range(2):
    host_frames += list(struct.pack("<H", len(vnet + frame))) + list(vnet + frame)
rx = chain((True, 2048, None)) * 4
put("net", "frames-both-ways", list(struct.pack("<I", 0xffffffff)) + [3 | (2 << 5)] + host_frames + [2]
    + chain((False, 72, vnet + frame)) + chain((False, 12, vnet), (False, 60, frame)) + rx)
put("net", "no-mergeable-buffers", list(struct.pack("<I", 0xffff7fff)) + [3 | (1 << 5)] + host_frames[:len(host_frames) // 2] + [1]
    + chain((False, 72, vnet + frame)) + chain((True, 1536, None)) * 2)
csum = bytes([1, 0]) + struct.pack("<HHHHH", 0, 0, 34, 6, 0)
put("net", "checksum-offload-and-tso", list(struct.pack("<I", 0xffffffff)) + [3] + [2]
    + chain((False, 72, csum + frame)) + chain((False, 72, bytes([0, 1]) + struct.pack("<HHHHH", 54, 1448, 0, 0, 0) + frame)) + rx)
put("net", "short-receive-buffer", list(struct.pack("<I", 0xffffffff)) + [2 | (1 << 5)] + host_frames[:len(host_frames) // 2] + [0]
    + chain((True, 8, None)))

# --- vsock: shape (line length in the low 6 bits, 0x40 a host client, 0x80 transport reset),
# the client's line, then tx chains of 44-byte headers and payloads.
def vsock(op, src_port, dst_port, payload=b"", flags=0, src_cid=3, dst_cid=2, kind=1):
    return struct.pack("<QQIIIHHIII", src_cid, dst_cid, src_port, dst_port, len(payload), kind, op, flags, 65536, 0) + payload

guest_stream = (chain((False, 44, vsock(1, 5000, 1024))) + chain((False, 49, vsock(5, 5000, 1024, b"hello")))
                + chain((False, 44, vsock(6, 5000, 1024))) + chain((False, 44, vsock(4, 5000, 1024, flags=3)))
                + chain((False, 44, vsock(3, 5000, 1024))))
put("vsock", "guest-connects-to-host", [0] + guest_stream)
line = b"CONNECT 52\n"
put("vsock", "host-client-connects", [len(line) | 0x40] + list(line) + chain((False, 44, vsock(2, 52, 1 << 30))))
put("vsock", "bad-headers", [0] + chain((False, 44, vsock(1, 1, 1024, src_cid=9))) + chain((False, 44, vsock(9, 1, 1024)))
    + chain((False, 48, vsock(1, 1, 1024, b"data"))) + chain((False, 20, bytes(20))))
put("vsock", "bad-line-and-reset", [5 | 0x40 | 0x80] + list(b"HELLO") + guest_stream)

# --- ttrpc: frames as a client writes them.
def varint(n):
    out = []
    while True:
        b = n & 0x7f
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def field(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data

def request(method, payload=b"", service="fuzz.v1.Echo", timeout=0, metadata=()):
    body = field(1, service.encode()) + field(2, method.encode()) + field(3, payload)
    if timeout:
        body += varint(4 << 3) + varint(timeout)
    for k, v in metadata:
        body += field(5, field(1, k.encode()) + field(2, v.encode()))
    return body

def frame(stream, body, kind=1, flags=0, length=None):
    return struct.pack(">IIBB", len(body) if length is None else length, stream, kind, flags) + body

put("ttrpc", "echo-typed-fail", frame(1, request("Echo", b"ping")) + frame(3, request("Typed", field(1, b"hi")))
    + frame(5, request("Fail", metadata=[("k", "v")])))
put("ttrpc", "unknown-and-even", frame(1, request("Nope")) + frame(3, request("Echo", service="other.Service")) + frame(2, request("Echo")))
put("ttrpc", "reuse-and-timeout", frame(7, request("Echo", timeout=1)) + frame(7, request("Echo")) + frame(9, b"\xff\xff"))
put("ttrpc", "unknown-type-then-oversized", frame(1, b"", kind=9) + frame(11, b"", length=5 << 20))
put("ttrpc", "truncated", frame(1, request("Echo", b"x" * 40))[:30])

# --- kernel: the Boot tests' fixtures, well-formed and broken.
fixtures = os.path.join(ROOT, "..", "Tests", "BootTests", "Fixtures")
for name in ["tiny-pvh.elf", "tiny-64.elf", "tiny.bzImage", "truncated.elf", "overlapping-segments.elf", "old-protocol.bzImage"]:
    os.makedirs(os.path.join(CORPUS, "kernel"), exist_ok=True)
    shutil.copyfile(os.path.join(fixtures, name), os.path.join(CORPUS, "kernel", name))

# --- fwcfg: u16 image length, the guest memory image, then port operations
# (op % 4: 0 select u16, 1 data read, 2 DMA at u16 address (op & 0x80: u64), 3 raw write).
def dma(control, length, address):
    return struct.pack(">IIQ", control, length, address)

SELECT, READ, SKIP, WRITE_ = 8, 2, 4, 0x10
image = bytearray(0x300)
image[0x100:0x110] = dma(0x11 << 16 | SELECT | READ, 64, 0x200)
image[0x120:0x130] = dma(0x19 << 16 | SELECT | SKIP, 4, 0)
image[0x140:0x150] = dma(READ, 64, 0x240)
image[0x160:0x170] = dma(0x11 << 16 | SELECT | READ, 0xffffffff, 0xff00)
image[0x180:0x190] = dma(WRITE_, 4, 0x200)
ops = [2, 0x00, 0x01, 2, 0x20, 0x01, 2, 0x40, 0x01, 2, 0x60, 0x01, 2, 0x80, 0x01]
put("fwcfg", "dma-select-read-skip", list(struct.pack("<H", len(image))) + list(image) + ops)
put("fwcfg", "ports-select-and-read", [0, 0] + [0, 0x19, 0x00] + [1 | (8 << 2)] * 10 + [0, 0x00, 0x00] + [1 | (4 << 2)] * 2
    + [3 | (2 << 2), 1, 2] + [0x82] + list(struct.pack("<Q", 1 << 40)))
