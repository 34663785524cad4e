#!/bin/sh
# tests/install_check.sh - the packaging test run by `make check` (target check-install).
#
# 1. `make install PREFIX=<tmp>/usr`, then with PKG_CONFIG_PATH=<tmp>/usr/lib/pkgconfig:
#    - an outside program (written here, in its own folder) built with
#      `cc prog.c $(pkg-config --cflags --libs nnc)` (links libnnc.so; run with LD_LIBRARY_PATH)
#      and against libnnc.a with `pkg-config --static --libs nnc`; both must print
#      nnc_version() == NNC_VERSION == the version in nn/version.h, and the shared one must
#      have loaded libnnc.so.<major> from the prefix;
#    - the README's embedding program (between the markers <!-- embed:begin --> and
#      <!-- embed:end --> in README.md), compiled exactly as README.md's compile line shows;
#    - each examples/*.c with the compile line its header comment shows (`cc examples/...`).
# 2. `make install DESTDIR=<tmp>/stage PREFIX=/opt/nnc`: the staged tree holds the files and
#    nnc.pc names /opt/nnc; `make uninstall` with the same variables leaves no file behind.
# Environment: MAKE (make), CC (cc). Exits non-zero with a message on the first failure.
set -eu
MAKE=${MAKE:-make}
CC=${CC:-cc}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nnc-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "install_check: FAIL: $*" >&2; exit 1; }

want=$(sed -n 's/^#define NNC_VERSION "\(.*\)"/\1/p' "$ROOT/nn/version.h")
major=${want%%.*}
[ -n "$want" ] || fail "no NNC_VERSION in nn/version.h"

echo "== install into $TMP/usr"
P=$TMP/usr
$MAKE -s -C "$ROOT" install PREFIX="$P" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; fail "make install"; }
for f in bin/nnc lib/libnnc.a lib/libnnc.so lib/libnnc.so.$major lib/libnnc.so.$want lib/pkgconfig/nnc.pc \
         include/nnc/nnc.h include/nnc/nn/nnc.h include/nnc/nn/version.h include/nnc/dist/dist.h; do
    [ -e "$P/$f" ] || fail "make install did not install $f"
done
[ "$(readlink "$P/lib/libnnc.so.$major")" = "libnnc.so.$want" ] || fail "libnnc.so.$major does not point at libnnc.so.$want"
"$P/bin/nnc" --help >/dev/null 2>&1 || fail "installed nnc --help"

export PKG_CONFIG_PATH="$P/lib/pkgconfig"
[ "$(pkg-config --modversion nnc)" = "$want" ] || fail "pkg-config --modversion nnc: $(pkg-config --modversion nnc) != $want"

mkdir "$TMP/outside"
cd "$TMP/outside"
cat >prog.c <<'EOF'
#include <stdio.h>
#include <string.h>

#include <nnc.h>

int main(void)
{
    nnc_train_config c = nnc_train_config_default();
    printf("%s %s\n", nnc_version(), NNC_VERSION);
    return strcmp(nnc_version(), NNC_VERSION) != 0 || c.batch <= 0;
}
EOF
# Shared: the plain pkg-config line, as README.md shows it.
$CC prog.c $(pkg-config --cflags --libs nnc) -o prog_shared || fail "build against libnnc.so"
out=$(LD_LIBRARY_PATH="$P/lib" ./prog_shared) || fail "prog_shared: $out"
[ "$out" = "$want $want" ] || fail "prog_shared printed '$out', want '$want $want'"
LD_LIBRARY_PATH="$P/lib" ldd ./prog_shared | grep -q "libnnc.so.$major => $P/lib/" || fail "prog_shared did not load $P/lib/libnnc.so.$major"
# Static: the archive by path, its dependencies from Requires.private/Libs.private;
# --as-needed drops the -lnnc that pkg-config adds (libnnc.a already defined every symbol).
$CC prog.c $(pkg-config --cflags nnc) -Wl,--as-needed "$(pkg-config --variable=libdir nnc)/libnnc.a" \
    $(pkg-config --static --libs nnc) -o prog_static ||
    fail "build against libnnc.a"
if ldd ./prog_static | grep -q libnnc; then fail "prog_static depends on libnnc.so"; fi
out=$(./prog_static) || fail "prog_static: $out"
[ "$out" = "$want $want" ] || fail "prog_static printed '$out', want '$want $want'"
echo "nnc_version() = NNC_VERSION = $want (shared and static)"

# The README's program and compile line, verbatim.
sed -n '/<!-- embed:begin -->/,/<!-- embed:end -->/p' "$ROOT/README.md" >readme.md
awk '/^```c$/ {on = 1; next} /^```$/ {on = 0} on' readme.md >my_prog.c
line=$(awk '/^```sh$/ {on = 1; next} /^```$/ {on = 0} on && /^cc /' readme.md)
[ -s my_prog.c ] || fail "README.md: no C block between the embed markers"
[ -n "$line" ] || fail "README.md: no 'cc ...' line between the embed markers"
echo "README: $line"
sh -c "$line" || fail "README program does not compile with its own line"
[ -x my_prog ] || fail "README compile line made no ./my_prog"
# The public headers and the README program are warning-free strict C11.
for f in my_prog.c prog.c; do
    $CC -std=c11 -Wall -Wextra -Wpedantic -Werror -c "$f" $(pkg-config --cflags nnc) -o /dev/null ||
        fail "$f: warnings under -std=c11 -Wall -Wextra -Wpedantic"
done

# Each example with the line in its header comment, run from a folder that has examples/.
ln -s "$ROOT/examples" examples
for ex in "$ROOT"/examples/*.c; do
    line=$(sed -n 's/^ \*   \(cc examples\/.*\)$/\1/p' "$ex" | head -1)
    [ -n "$line" ] || fail "$ex: no ' *   cc examples/...' compile line in its header"
    echo "$(basename "$ex"): $line"
    sh -c "$line" || fail "$ex does not compile with its own line"
done

echo "== staged install (DESTDIR) and uninstall"
S=$TMP/stage
cd "$ROOT"
$MAKE -s install DESTDIR="$S" PREFIX=/opt/nnc >"$TMP/stage.log" 2>&1 || { cat "$TMP/stage.log"; fail "make install DESTDIR"; }
grep -qx 'prefix=/opt/nnc' "$S/opt/nnc/lib/pkgconfig/nnc.pc" || fail "staged nnc.pc does not name prefix /opt/nnc"
[ -f "$S/opt/nnc/include/nnc/dist/dist.h" ] || fail "staged install has no include/nnc/dist/dist.h"
$MAKE -s uninstall DESTDIR="$S" PREFIX=/opt/nnc >/dev/null || fail "make uninstall"
left=$(find "$S" -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $left"
$MAKE -s uninstall PREFIX="$P" >/dev/null || fail "make uninstall (prefix)"
left=$(find "$P" -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "install check: OK"
