#!/usr/bin/env bash
# Proves that another SwiftPM package can depend on Permafrost by version: clones this repository's
# committed HEAD into a scratch folder, tags it 1.0.0, and builds and runs a small package that
# depends on it through that local git URL (`from: "1.0.0"`), imports PermafrostNN and
# PermafrostGuard, and freezes a model with a guard. Also checks that the dependency's manifest,
# evaluated as a dependency, declares no unsafe flags (the root package's -Ounchecked and
# -target-cpu stay out of other packages' builds).
# Usage: Scripts/library/check_versioned_dependency.sh [scratch folder]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
scratch="${1:-$(mktemp -d)}"
mkdir -p "$scratch"
rm -rf "$scratch/permafrost.git" "$scratch/consumer"
git clone --quiet --bare "$root" "$scratch/permafrost.git"
git -C "$scratch/permafrost.git" tag 1.0.0 HEAD

mkdir -p "$scratch/consumer/Sources/GuardedModel"
cat > "$scratch/consumer/Package.swift" <<MANIFEST
// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Consumer",
    platforms: [.macOS(.v15)],
    dependencies: [.package(url: "file://$scratch/permafrost.git", from: "1.0.0")],
    targets: [
        .executableTarget(name: "GuardedModel", dependencies: [
            .product(name: "PermafrostNN", package: "permafrost"),
            .product(name: "PermafrostGuard", package: "permafrost"),
        ]),
    ]
)
MANIFEST
cat > "$scratch/consumer/Sources/GuardedModel/main.swift" <<'PROGRAM'
import PermafrostGuard
import PermafrostNN
import PermafrostTensor

var generator = PhiloxGenerator(seed: 0)
let model = Sequential([Linear(4, 8, generator: &generator), ReLU(), Linear(8, 2, generator: &generator)])
let guardManifest = try GuardManifest(model: model, frozen: ["0.weight", "0.bias"], baseSHA256: "unpublished", settings: [:])
try model.apply(guardManifest.plan)
print("guarded:", guardManifest.frozen, "trainable:", model.trainableParameters().map(\.name))
PROGRAM

cd "$scratch/consumer"
swift build --product GuardedModel 2>&1 | tail -n 3
output="$(swift run --skip-build GuardedModel)"
echo "$output"
expected='guarded: ["0.bias", "0.weight"] trainable: ["2.weight", "2.bias"]'
[ "$output" = "$expected" ] || { echo "versioned dependency: FAILED (expected: $expected)"; exit 1; }

checkout="$(find .build/checkouts -mindepth 1 -maxdepth 1 -type d -name 'permafrost*' | head -n 1)"
[ -n "$checkout" ] || { echo "versioned dependency: FAILED (no checkout of Permafrost under .build/checkouts)"; exit 1; }
if (cd "$checkout" && swift package dump-package) | grep -q '"unsafeFlags"'; then
  echo "versioned dependency: FAILED (the dependency's manifest declares unsafe flags)"; exit 1
fi
echo "versioned dependency: OK (Permafrost 1.0.0 from a local git URL, no unsafe flags in the dependency)"
