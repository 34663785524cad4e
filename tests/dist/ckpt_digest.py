#!/usr/bin/env python3
"""Digest of an nnc checkpoint (nn/checkpoint.h layout) for the MPI tests: prints one line
`<sha256> <file>` over every section except run/meta (which holds wall-clock seconds), then
`center <sha256>` of run/center alone. Exit 2 on a malformed file."""
import hashlib
import struct
import sys


def sections(path):
    b = open(path, "rb").read()
    if b[:8] != b"NNCCKPT1":
        sys.exit("bad magic in %s" % path)
    _ver, nsec, alen = struct.unpack_from("<III", b, 8)
    o = 20 + alen + 4
    for _ in range(nsec):
        (nl,) = struct.unpack_from("<I", b, o)
        name = b[o + 4:o + 4 + nl].decode()
        o += 4 + nl
        _kind, ndim = struct.unpack_from("<II", b, o)
        o += 8 + 4 * ndim
        (nbytes,) = struct.unpack_from("<Q", b, o)
        o += 8 + 4
        yield name, b[o:o + nbytes]
        o += nbytes


def main():
    for path in sys.argv[1:]:
        h, c = hashlib.sha256(), hashlib.sha256()
        for name, data in sections(path):
            if name == "run/meta":
                continue
            h.update(name.encode() + b"\0" + data)
            if name == "run/center":
                c.update(data)
        print(h.hexdigest(), path)
        print("center", c.hexdigest())


if __name__ == "__main__":
    main()
