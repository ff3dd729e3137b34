#!/usr/bin/env bash
# Builds vigil-agent and vigil-detector .deb packages with plain dpkg-deb.
#
#   packaging/build-deb.sh [--bin-dir DIR] [--out DIR] [--compress xz|gzip|none] [agent|detector]...
#
# Without --bin-dir, builds the release binaries first (cargo build --release, into
# $CARGO_TARGET_DIR or target/). Packages go to --out (default: target/packages), named
# <package>_<version>_<arch>.deb; the version is the one the binary reports. Prints the path of
# each package built.
set -euo pipefail
umask 022

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=""
out=""
compress=xz
which=()
while [ $# -gt 0 ]; do
    case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compress) compress=$2; shift 2 ;;
    agent | detector) which+=("$1"); shift ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#which[@]} -gt 0 ] || which=(agent detector)
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${out:-$target_dir/packages}

command -v dpkg-deb >/dev/null || { echo "build-deb.sh: dpkg-deb is missing (Debian package dpkg)" >&2; exit 1; }

if [ -z "$bin_dir" ]; then
    packages=()
    for w in "${which[@]}"; do packages+=(-p "vigil-$w"); done
    (cd "$root" && cargo build --release --locked "${packages[@]}" --bins)
    bin_dir=$target_dir/release
fi

arch=$(dpkg --print-architecture)
mkdir -p "$out"
stage_root=$(mktemp -d)
trap 'rm -rf "$stage_root"' EXIT

for w in "${which[@]}"; do
    package=vigil-$w
    binary=$bin_dir/$package
    [ -x "$binary" ] || { echo "build-deb.sh: no binary $binary" >&2; exit 1; }
    # "vigil-agent 0.1.0" -> 0.1.0
    version=$("$binary" --version | awk '{print $2}')
    [ -n "$version" ] || { echo "build-deb.sh: $binary --version printed no version" >&2; exit 1; }
    case $w in
    agent)
        other=vigil-detector extra_groups=adm
        description="Vigil agent: watches Java logs and host metrics for release judgement"
        long=" Tails the Java logs of a service, fingerprints exception stack traces, flags
 dangerous exception classes, samples host CPU, memory, load and disk IO, and
 ships per-minute counters to the Vigil detector over gRPC."
        ;;
    detector)
        other=vigil-agent extra_groups=""
        description="Vigil detector: judges releases of Java services"
        long=" Ingests the counters of Vigil agents into an embedded store and decides,
 minute by minute, whether a release is healthy, suspicious or must be stopped.
 Serves an HTTP API, health pages and Prometheus metrics."
        ;;
    esac
    # The newest glibc symbol version the binary needs.
    glibc=$(grep -ao 'GLIBC_2\.[0-9]*' "$binary" | sort -uV | tail -n1 | sed 's/GLIBC_//')

    stage=$stage_root/$package
    install -D -m 0755 "$binary" "$stage/usr/bin/$package"
    install -D -m 0640 "$root/packaging/$w.toml" "$stage/etc/vigil/$w.toml"
    install -D -m 0644 "$root/systemd/$package.service" "$stage/lib/systemd/system/$package.service"
    install -d -m 0755 "$stage/usr/share/doc/$package"
    cat >"$stage/usr/share/doc/$package/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vigil
Files: *
License: Apache-2.0
 On Debian systems the full text of the license is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
    chmod 0644 "$stage/usr/share/doc/$package/copyright"

    install -d -m 0755 "$stage/DEBIAN"
    for script in postinst prerm postrm; do
        sed -e "s/@PACKAGE@/$package/g" -e "s/@CONFIG@/$w.toml/g" \
            -e "s/@EXTRA_GROUPS@/$extra_groups/g" -e "s/@OTHER@/$other/g" \
            "$root/packaging/deb/$script" >"$stage/DEBIAN/$script"
        chmod 0755 "$stage/DEBIAN/$script"
    done
    echo "/etc/vigil/$w.toml" >"$stage/DEBIAN/conffiles"
    installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    cat >"$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: Vigil developers <vigil@example.invalid>
Installed-Size: $installed_size
Depends: adduser, libc6 (>= ${glibc:-2.17}), libgcc-s1
Section: admin
Priority: optional
Homepage: https://example.invalid/vigil
Description: $description
$long
CONTROL
    chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles"

    deb=$out/${package}_${version}_${arch}.deb
    dpkg-deb --root-owner-group -Z"$compress" --build "$stage" "$deb" >/dev/null
    echo "$deb"
done
