#!/usr/bin/env bash
# Vendored from ../shared/corpus/fetch-corpus.sh (a clean clone, as CI runs, has no ../shared);
# used by tests/corpus_test.py, bench/corpus.py and bench/memory.py. Keep it in step with that file.
# fetch-corpus.sh DEST  -- download third-party benchmark sources from package
# registries only (Debian source packages, PyPI sdist, npm tarball), unpack them
# under DEST/src and configure each into DEST/build/<name> (build.ninja).
#
# Env knobs:
#   LAUNCHER=/path/to/shim   also configure DEST/build/<name>-wrapped with the
#                            launcher (CMake *_COMPILER_LAUNCHER and *_LINKER_LAUNCHER,
#                            CXX="shim g++" for ninja's configure.py)
#   PYTHON=...               python used for pip and ninja's configure.py
#   CMAKE_BUILD_TYPE=...     default RelWithDebInfo (-O2 -g)
# Needs: gcc/g++, cmake>=3.13, ninja, dpkg-dev (dpkg-source), pip, npm, root
# for the one-time deb-src setup.
set -euo pipefail

DEST=$(realpath -m "${1:?usage: fetch-corpus.sh DEST}")
PYTHON=${PYTHON:-python3}
BT=${CMAKE_BUILD_TYPE:-RelWithDebInfo}
LAUNCHER=${LAUNCHER:-}

# Pinned versions (Debian bookworm; PyPI; npm).  Debian pins fall back to the
# current candidate if the exact version has left the archive.
DEB_LIBUV=libuv1=1.44.2-1+deb12u1
DEB_ABSEIL=abseil=20220623.1-1+deb12u2
DEB_GTEST=googletest=1.12.1-0.2
PYPI_NINJA=ninja==1.13.2
NPM_SQLITE=better-sqlite3@12.11.1

DL=$DEST/dl SRC=$DEST/src BLD=$DEST/build
mkdir -p "$DL" "$SRC" "$BLD"
log() { printf '[fetch-corpus] %s\n' "$*" >&2; }

# --- 0. make sure deb-src is enabled (mirror the existing deb entries) -------
if [ -z "$(apt-cache showsrc libuv1 2>/dev/null)" ]; then
  log "enabling deb-src (needs root)"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      > /etc/apt/sources.list.d/corpus-deb-src.sources
  else
    grep -h '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
      > /etc/apt/sources.list.d/corpus-deb-src.list
  fi
  apt-get update -qq
fi

deb_source() {   # deb_source PKG=VER DIRNAME
  local spec=$1 name=$2 d=$DL/deb-$2
  if [ ! -d "$SRC/$name" ]; then
    rm -rf "$d"; mkdir -p "$d"
    ( cd "$d" && { apt-get source -qq "$spec" || apt-get source -qq "${spec%%=*}"; } ) >&2
    mv "$(find "$d" -mindepth 1 -maxdepth 1 -type d | head -n1)" "$SRC/$name"
  fi
}

# --- 1. sources --------------------------------------------------------------
log "Debian: libuv1, abseil, googletest"
deb_source "$DEB_LIBUV"  libuv
deb_source "$DEB_ABSEIL" abseil
deb_source "$DEB_GTEST"  googletest

log "PyPI: ninja sdist (contains ninja-upstream/ with configure.py)"
if [ ! -d "$SRC/ninja" ]; then
  "$PYTHON" -m pip download -q --no-binary :all: --no-deps "$PYPI_NINJA" -d "$DL/pypi" >&2
  tar -xzf "$DL"/pypi/ninja-*.tar.gz -C "$DL/pypi"
  mv "$DL"/pypi/ninja-*/ninja-upstream "$SRC/ninja"
fi

log "npm: better-sqlite3 tarball (contains the sqlite3.c amalgamation)"
if [ ! -d "$SRC/sqlite" ]; then
  mkdir -p "$DL/npm" "$SRC/sqlite"
  ( cd "$DL/npm" && npm pack -q "$NPM_SQLITE" >/dev/null 2>&1 && tar -xzf better-sqlite3-*.tgz )
  cp "$DL"/npm/package/deps/sqlite3/sqlite3.[ch] "$DL"/npm/package/deps/sqlite3/sqlite3ext.h "$SRC/sqlite/"
  # Our own 10-line build description (not third-party code).
  cat > "$SRC/sqlite/CMakeLists.txt" <<'CMK'
cmake_minimum_required(VERSION 3.13)
project(sqlite_amalgamation C)
set(defs SQLITE_ENABLE_FTS5 SQLITE_ENABLE_RTREE SQLITE_ENABLE_MATH_FUNCTIONS SQLITE_THREADSAFE=1)
add_library(sqlite3 SHARED sqlite3.c)
target_compile_definitions(sqlite3 PRIVATE ${defs})
target_link_libraries(sqlite3 PRIVATE m)
add_library(sqlite3_static STATIC sqlite3.c)
target_compile_definitions(sqlite3_static PRIVATE ${defs})
CMK
fi

# --- 2. configure into ninja build dirs ---------------------------------------
configure_all() {  # configure_all SUFFIX [LAUNCHER]
  local sfx=$1 l=${2:-} cm=() cxx=g++
  if [ -n "$l" ]; then
    cm=(-DCMAKE_C_COMPILER_LAUNCHER="$l" -DCMAKE_CXX_COMPILER_LAUNCHER="$l"
        -DCMAKE_C_LINKER_LAUNCHER="$l" -DCMAKE_CXX_LINKER_LAUNCHER="$l"); cxx="$l g++"
  fi
  cmake -G Ninja -S "$SRC/libuv" -B "$BLD/libuv$sfx" -DCMAKE_BUILD_TYPE="$BT" \
        -DLIBUV_BUILD_TESTS=ON "${cm[@]}" >/dev/null
  cmake -G Ninja -S "$SRC/abseil" -B "$BLD/abseil$sfx" -DCMAKE_BUILD_TYPE="$BT" \
        -DBUILD_TESTING=OFF -DABSL_PROPAGATE_CXX_STD=ON -DCMAKE_CXX_STANDARD=17 "${cm[@]}" >/dev/null
  cmake -G Ninja -S "$SRC/sqlite" -B "$BLD/sqlite$sfx" -DCMAKE_BUILD_TYPE="$BT" "${cm[@]}" >/dev/null
  # ninja's own generator writes build.ninja into the cwd; build target "all"
  mkdir -p "$BLD/ninja$sfx"
  ( cd "$BLD/ninja$sfx" && CXX="$cxx" "$PYTHON" "$SRC/ninja/configure.py" \
        --gtest-source-dir="$SRC/googletest" >/dev/null )
}
log "configuring (CMAKE_BUILD_TYPE=$BT)"
configure_all ""
[ -n "$LAUNCHER" ] && configure_all "-wrapped" "$LAUNCHER"

for d in "$BLD"/*/; do
  d=${d%/}; n=$(basename "$d"); t=; [ "${n%-wrapped}" = ninja ] && t=all
  printf '%-16s %4d commands  (build: ninja -C %s -j2 %s)\n' "$n" \
    "$(ninja -C "$d" -t commands $t | wc -l)" "$d" "$t"
done
du -sh "$DL" "$SRC" | sed 's/^/[fetch-corpus] size /' >&2
