#!/usr/bin/env bash
# Builds the vigil-agent and vigil-detector .rpm packages with rpmbuild (on Debian: the
# `rpm` package) from packaging/rpm/vigil.spec.
#
#   packaging/build-rpm.sh [--bin-dir DIR] [--out DIR]
#
# Without --bin-dir, builds the release binaries first (cargo build --release, into
# $CARGO_TARGET_DIR or target/). Packages go to --out (default: target/packages). Prints the
# path of each package built.
set -euo pipefail
umask 022

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build-rpm.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${out:-$target_dir/packages}

command -v rpmbuild >/dev/null || { echo "build-rpm.sh: rpmbuild is missing (Debian package rpm)" >&2; exit 1; }

if [ -z "$bin_dir" ]; then
    (cd "$root" && cargo build --release --locked -p vigil-agent -p vigil-detector --bins)
    bin_dir=$target_dir/release
fi
bin_dir=$(cd "$bin_dir" && pwd)
for b in vigil-agent vigil-detector; do
    [ -x "$bin_dir/$b" ] || { echo "build-rpm.sh: no binary $bin_dir/$b" >&2; exit 1; }
done
version=$("$bin_dir/vigil-agent" --version | awk '{print $2}')
[ "$("$bin_dir/vigil-detector" --version | awk '{print $2}')" = "$version" ] ||
    { echo "build-rpm.sh: vigil-agent and vigil-detector report different versions" >&2; exit 1; }

topdir=$(mktemp -d)
trap 'rm -rf "$topdir"' EXIT
mkdir -p "$out"
# The vigil user does not exist on the build machine: rpm records the names, so the
# "user vigil does not exist - using root" warnings are expected.
rpmbuild -bb --quiet \
    --define "_topdir $topdir" \
    --define "vigil_version $version" \
    --define "vigil_bindir $bin_dir" \
    --define "vigil_srcdir $root" \
    "$root/packaging/rpm/vigil.spec" 2> >(grep -v 'does not exist - using root' >&2)
find "$topdir/RPMS" -name '*.rpm' -exec cp {} "$out/" \; -exec basename {} \; |
    while read -r rpm; do echo "$out/$rpm"; done
