#!/usr/bin/env bash
# A Debian package of berth: the binaries, berth.service and berth.socket (socket activation),
# /etc/berth/daemon.json, shell completions (bash, zsh, fish) and man pages, and scripts that
# make the `berth` group (the socket's). Built with dpkg-deb from the release binaries
# (scripts/build-release.sh), or from the binaries in the directory given:
#   scripts/build-deb.sh [BIN_DIR]   ->   target/deb/berth_<version>_<arch>.deb (path printed)
set -euo pipefail
cd "$(dirname "$0")/.."
bins=${1:-}
if [[ -z "$bins" ]]; then
  scripts/build-release.sh
  bins=target/dist
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d "${TMPDIR:-/tmp}/berth-deb-XXXXXX")
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
share=$root/usr/share
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/berth" \
  "$share/bash-completion/completions" "$share/zsh/vendor-completions" "$share/fish/vendor_completions.d" \
  "$share/man/man1" "$share/man/man8" "$share/doc/berth"
# Stripped (a package has no use for debug information; release binaries lose little).
for b in berthd berth berth-shim berth-runc berth-init; do
  install -m 0755 "$bins/$b" "$root/usr/bin/$b"
  strip --strip-debug "$root/usr/bin/$b" 2>/dev/null || true
done
install -m 0644 packaging/systemd/berth.service packaging/systemd/berth.socket "$root/lib/systemd/system/"
install -m 0644 packaging/daemon.json "$root/etc/berth/daemon.json"
"$bins/berth" completion bash > "$share/bash-completion/completions/berth"
"$bins/berth" completion zsh > "$share/zsh/vendor-completions/_berth"
"$bins/berth" completion fish > "$share/fish/vendor_completions.d/berth.fish"
"$bins/berth" man "$share/man/man1"
"$bins/berthd" --print-man > "$share/man/man8/berthd.8"
gzip -9n "$share"/man/man1/*.1 "$share/man/man8/berthd.8"
printf 'berth\nLicense: Apache-2.0\nOn Debian systems the license is in /usr/share/common-licenses/Apache-2.0.\n' \
  > "$share/doc/berth/copyright"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/berth/daemon.json > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: berth
Version: $version
Architecture: $arch
Maintainer: berth developers <berth@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: libc6, libgcc-s1, libseccomp2
Recommends: nftables
Section: admin
Priority: optional
Homepage: https://localhost/berth
Description: Docker-compatible container engine
 berthd serves the Docker Engine API on /run/berth/berth.sock: the docker CLI,
 docker-compose and the Docker SDKs work against it unchanged, as does its own
 berth command line. Containers run under a small shim each, so they outlive a
 restart of the daemon.
CONTROL
mkdir -p target/deb
out=target/deb/berth_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out" >/dev/null
echo "$out"
