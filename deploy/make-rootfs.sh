#!/usr/bin/env bash
# Assembles the root filesystem of the Ringcast image from a glibc-linked `ringcast` binary:
#   /usr/local/bin/ringcast          the binary, debug info stripped (symbols kept for backtraces)
#   /lib/..., /lib64/ld-linux-*.so.* every shared library `ldd` resolves, and the dynamic loader,
#                                    each at the path ldd printed (symlinks resolved to files)
#   /etc/passwd, /etc/group          root and the unprivileged user ringcast (uid/gid 10001)
#   /etc/ringcast/ringcast.toml      container defaults (listen on all interfaces; see the file)
#   /tmp                             mode 1777
# Used by the Dockerfile's `rootfs` stage and by scripts/check-image.sh on a host-built binary,
# so both images have the same contents.
# Usage: deploy/make-rootfs.sh BINARY DESTDIR     (DESTDIR is emptied first)
set -euo pipefail

bin=${1:?usage: make-rootfs.sh BINARY DESTDIR}
dest=${2:?usage: make-rootfs.sh BINARY DESTDIR}
here=$(cd "$(dirname "$0")" && pwd)

[ -x "$bin" ] || { echo "make-rootfs: $bin is not an executable" >&2; exit 1; }
case "$dest" in "" | / ) echo "make-rootfs: refusing DESTDIR '$dest'" >&2; exit 1 ;; esac
rm -rf "$dest"
mkdir -p "$dest"/usr/local/bin "$dest"/etc/ringcast "$dest"/tmp
chmod 1777 "$dest"/tmp

# The binary, without DWARF (the release profile keeps line tables: ~46 MB -> ~10 MB).
objcopy --strip-debug "$bin" "$dest"/usr/local/bin/ringcast
chmod 0755 "$dest"/usr/local/bin/ringcast

# Shared libraries and the loader, from ldd. A library ldd cannot find is an error, and so is a
# statically linked binary's "not a dynamic executable" (then only the binary is needed).
ldd_out=$(ldd "$bin" 2>&1) || true
if grep -q 'not found' <<<"$ldd_out"; then
    echo "make-rootfs: unresolved libraries:" >&2
    grep 'not found' <<<"$ldd_out" >&2
    exit 1
fi
if ! grep -q 'not a dynamic executable\|statically linked' <<<"$ldd_out"; then
    # "libfoo.so.N => /path (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"; skip the vDSO.
    libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
    [ -n "$libs" ] || { echo "make-rootfs: no libraries in ldd output:" >&2; echo "$ldd_out" >&2; exit 1; }
    for lib in $libs; do
        mkdir -p "$dest$(dirname "$lib")"
        cp -L "$lib" "$dest$lib"
    done
fi

cat >"$dest"/etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
ringcast:x:10001:10001:Ringcast SFU:/nonexistent:/sbin/nologin
PASSWD
cat >"$dest"/etc/group <<'GROUP'
root:x:0:
ringcast:x:10001:
GROUP
cp "$here"/ringcast.toml "$dest"/etc/ringcast/ringcast.toml
chmod 0644 "$dest"/etc/passwd "$dest"/etc/group "$dest"/etc/ringcast/ringcast.toml
