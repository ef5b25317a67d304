#!/usr/bin/env python3
"""Builds the compact data shipped in Data/ from the bundled sets in ../shared/data.

  python3 Scripts/data/make_subsets.py [SHARED_DATA_DIR]

Writes gzip'd IDX files (the MNIST "ubyte" format):
  Data/mnist/          MNIST digits: the first 20,000 training images and all 10,000 test images.
  Data/fashion-mnist/  Fashion-MNIST, classes 1 (trouser), 7 (sneaker) and 8 (bag) only, original
                       labels kept: from the first 10,000 training and 3,000 test images.
  Data/rt-snippets/    the review snippets (train.tsv, test.tsv), gzip'd unchanged.
The output is deterministic (gzip mtime 0), so re-running reproduces the committed bytes.
"""
import gzip
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"


def read_idx(path):
    data = path.read_bytes()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        size = rows * cols
        return [data[16 + i * size:16 + (i + 1) * size] for i in range(count)], (rows, cols)
    assert magic == 0x801, path
    return list(data[8:8 + count]), None


def write_idx(path, images, labels, shape):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIII", 0x803, len(images), *shape)
    for name, payload in [(path.name + "-images-idx3-ubyte.gz", header + b"".join(images)),
                          (path.name + "-labels-idx1-ubyte.gz", struct.pack(">II", 0x801, len(labels)) + bytes(labels))]:
        with open(path.parent / name, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(payload)


def subset(folder, split, keep=None):
    images, shape = read_idx(SOURCE / folder / f"{split}-images-idx3-ubyte")
    labels, _ = read_idx(SOURCE / folder / f"{split}-labels-idx1-ubyte")
    pairs = [(i, l) for i, l in zip(images, labels) if keep is None or l in keep]
    return [p[0] for p in pairs], [p[1] for p in pairs], shape


for split, limit in [("train", 20_000), ("t10k", None)]:
    images, labels, shape = subset("mnist", split)
    write_idx(ROOT / "Data" / "mnist" / split, images[:limit], labels[:limit], shape)
for split in ["train", "t10k"]:
    images, labels, shape = subset("fashion-mnist", split, keep={1, 7, 8})
    write_idx(ROOT / "Data" / "fashion-mnist" / split, images, labels, shape)
for split in ["train", "test"]:
    (ROOT / "Data" / "rt-snippets").mkdir(parents=True, exist_ok=True)
    with open(ROOT / "Data" / "rt-snippets" / f"{split}.tsv.gz", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out:
            out.write((SOURCE / "rt-snippets" / f"{split}.tsv").read_bytes())
print("wrote", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "Data").rglob("*.gz")))
