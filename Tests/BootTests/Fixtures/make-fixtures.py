#!/usr/bin/env python3
"""Writes the kernel-image fixtures the boot tests parse (good and deliberately bad).

Run from this directory; the outputs are checked in so the tests need no tools.
"""
import struct

def elf(segments, pvh_entry=None, entry=0x100000, ei_class=2, machine=62, truncate=None):
    """segments: list of (file_bytes, paddr, memsz). Data starts at offset 0x1000."""
    phnum = len(segments) + (1 if pvh_entry is not None else 0)
    ehdr = b'\x7fELF' + bytes([ei_class, 1, 1, 0]) + b'\0' * 8
    ehdr += struct.pack('<HHIQQQIHHHHHH', 2, machine, 1, entry, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    note_off = 64 + 56 * phnum
    note = b''
    if pvh_entry is not None:
        note = struct.pack('<III', 4, 4, 18) + b'Xen\0' + struct.pack('<I', pvh_entry)
    phdrs = b''
    off = 0x1000
    data = b''
    for (body, paddr, memsz) in segments:
        phdrs += struct.pack('<IIQQQQQQ', 1, 5, off, paddr, paddr, len(body), memsz, 0x1000)
        data += body
        off += len(body)
    if pvh_entry is not None:
        phdrs += struct.pack('<IIQQQQQQ', 4, 4, note_off, 0, 0, len(note), len(note), 4)
    out = ehdr + phdrs + note
    out += b'\0' * (0x1000 - len(out)) + data
    return out[:truncate] if truncate else out

def bzimage(magic=b'HdrS', version=0x020f, truncate=None, payload=b'\x90' * 64):
    setup_sects = 1
    img = bytearray(512 * (setup_sects + 1))
    img[0x1f1] = setup_sects
    struct.pack_into('<H', img, 0x1fe, 0xAA55)
    img[0x200] = 0xEB           # jmp
    img[0x201] = 0x66           # header ends at 0x202 + 0x66 = 0x268
    img[0x202:0x206] = magic
    struct.pack_into('<H', img, 0x206, version)
    img[0x211] = 0x01           # LOADED_HIGH
    struct.pack_into('<I', img, 0x214, 0x100000)     # code32_start
    struct.pack_into('<I', img, 0x22c, 0x7fffffff)   # initrd_addr_max
    struct.pack_into('<I', img, 0x230, 0x200000)     # kernel_alignment
    img[0x234] = 1                                   # relocatable
    struct.pack_into('<H', img, 0x236, 0x1)          # XLF_KERNEL_64
    struct.pack_into('<I', img, 0x238, 2047)         # cmdline_size
    struct.pack_into('<Q', img, 0x258, 0x1000000)    # pref_address
    struct.pack_into('<I', img, 0x260, 0x200000)     # init_size
    out = bytes(img) + payload
    return out[:truncate] if truncate else out

code = b'\xf4' * 16
files = {
    'tiny-pvh.elf': elf([(code, 0x100000, 0x2000)], pvh_entry=0x100000),
    'tiny-64.elf': elf([(code, 0x100000, 0x1000)]),
    'truncated.elf': elf([(code, 0x100000, 0x1000)], pvh_entry=0x100000, truncate=100),
    'segment-past-eof.elf': elf([(code, 0x100000, 0x1000)], truncate=0x1008),
    'overlapping-segments.elf': elf([(code, 0x100000, 0x2000), (code, 0x101000, 0x1000)]),
    'elf32.elf': elf([(code, 0x100000, 0x1000)], ei_class=1),
    'wrong-machine.elf': elf([(code, 0x100000, 0x1000)], machine=3),
    'segment-below-1m.elf': elf([(code, 0x8000, 0x1000)], pvh_entry=0x8000),
    'tiny.bzImage': bzimage(),
    'bad-magic.bzImage': bzimage(magic=b'HdrX'),
    'old-protocol.bzImage': bzimage(version=0x0201),
    'truncated.bzImage': bzimage(truncate=0x2f0),
    'not-a-kernel.txt': b'this is not a kernel image\n' * 40,
}
for name, data in files.items():
    with open(name, 'wb') as f:
        f.write(data)
