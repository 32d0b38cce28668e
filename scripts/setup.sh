#!/usr/bin/env bash
# Set up everything dmn_localization needs in .venv, a complete ROS 2 Jazzy prefix.
#
# Run by `make setup` (and so by `make demo` and `make test`). Idempotent: each step
# is skipped when what it depends on has not changed since it last succeeded, so a
# second run with nothing changed takes seconds.
#
#   1. Debian packages for off-screen rendering (Xvfb, Mesa GL), when missing;
#   2. .venv with the pinned packages of requirements.lock (the one source of versions);
#   3. fix the ROS wheels' CMake exports, which name the Python include directory of
#      the machine that built them;
#   4. build and install dmn_localization_interfaces (ament_cmake + rosidl) into .venv;
#   5. install this package into .venv so that the ament index knows it, its
#      executables linked into lib/dmn_localization/ where colcon puts them;
#   6. make `. .venv/bin/activate` set up the whole ROS environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STAMPS="$VENV/.dmn_setup"
PYTHON=${PYTHON:-python3.11}
APT_PACKAGES=(xvfb xauth libgl1-mesa-dri libglu1-mesa libegl1 libegl-mesa0)

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Hash of the given files/directories' contents (paths sorted, build products skipped).
tree_hash() {
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -path '*/build/*' -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS" && printf '%s' "$2" > "$STAMPS/$1"; }

# --- 1. Debian packages ----------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- 2. virtual environment with pinned packages -------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: the ROS Jazzy wheels need CPython 3.11"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
lock_hash=$(tree_hash requirements.lock)
if ! stamp_ok requirements "$lock_hash"; then
  log "installing requirements.lock (first time: a few minutes)"
  # (the grep drops pip's warnings about this machine's optional local package indexes)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/requirements.lock" 2> >(grep -v 'is ignored: it is neither a file' >&2)
  # The CPU build of torch must be the one installed: never a multi-GB CUDA build.
  "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
version = md.version('torch')
cuda_parts = [d for d in (md.distribution('torch').requires or []) if d.startswith('nvidia')]
assert not cuda_parts, f'a CUDA build of torch {version} was installed: {cuda_parts[:3]}'
print(f'[setup] torch {version} (CPU build)')
EOF
  stamp_set requirements "$lock_hash"
  rm -f "$STAMPS/cmake_exports"
fi

# --- 3. CMake exports of the ROS wheels --------------------------------------------------
if ! stamp_ok cmake_exports "$lock_hash"; then
  py_include=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  np_include=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
  [ -f "$py_include/Python.h" ] || die "Python headers missing ($py_include/Python.h): install python3.11-dev"
  { grep -rlZ --include='*.cmake' '/opt/python/cp3' "$VENV/share" 2>/dev/null || true; } \
    | xargs -0 -r sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$np_include#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$py_include#g"
  stamp_set cmake_exports "$lock_hash"
fi

# --- ROS environment of the venv (also written into bin/activate below) -----------------
ros_libs=$(cd "$VENV" && ls -d lib/python3.11/site-packages/ros_*.libs 2>/dev/null \
  | sed "s#^#$VENV/#" | paste -sd: -)
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
export LD_LIBRARY_PATH="$VENV/lib${ros_libs:+:$ros_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 ROS_DISTRO=jazzy ROS_VERSION=2 ROS_PYTHON_VERSION=3
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp PATH="$VENV/bin:$PATH"

# --- 4. interface package -----------------------------------------------------------------
iface_hash=$(tree_hash dmn_localization_interfaces requirements.lock)
if ! stamp_ok interfaces "$iface_hash"; then
  log "building dmn_localization_interfaces"
  build="$VENV/build/dmn_localization_interfaces"
  rm -rf "$build" && mkdir -p "$build"
  if ! (cd "$build" \
        && cmake "$ROOT/dmn_localization_interfaces" -DCMAKE_INSTALL_PREFIX="$VENV" \
             -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
             -DCMAKE_BUILD_TYPE=Release \
        && cmake --build . -j "$(nproc)" && cmake --install .) > "$build.log" 2>&1; then
    tail -n 40 "$build.log" >&2
    die "building dmn_localization_interfaces failed; full log: $build.log"
  fi
  stamp_set interfaces "$iface_hash"
fi

# --- 5. this package ------------------------------------------------------------------------
# Editable install of the Python code and console scripts; the share files are linked
# into the prefix as `colcon build --symlink-install` would (an editable pip install
# does not install setup.py's data_files), so edits need no new set-up.
pkg_hash=$(tree_hash setup.py setup.cfg)
if ! stamp_ok package "$pkg_hash"; then
  log "installing dmn_localization (editable) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -e "$ROOT"
  stamp_set package "$pkg_hash"
fi
share="$VENV/share/dmn_localization"
index="$VENV/share/ament_index/resource_index/packages"
mkdir -p "$share" "$index"
for item in package.xml launch config models; do
  ln -sfn "$ROOT/$item" "$share/$item"
done
cp "$ROOT/resource/dmn_localization" "$index/dmn_localization"
# `ros2 run` and launch_ros look for a package's executables in <prefix>/lib/<package>/,
# where colcon installs them (setup.cfg); the editable install puts them in bin/: link them.
libexec="$VENV/lib/dmn_localization"
mkdir -p "$libexec"
"$VENV/bin/python" - "$VENV/bin" "$libexec" <<'PYEOF'
import importlib.metadata as md
import os
import sys

bin_dir, libexec = sys.argv[1:]
names = {e.name for e in md.distribution('dmn_localization').entry_points
         if e.group == 'console_scripts'}
for stale in set(os.listdir(libexec)) - names:
    os.remove(os.path.join(libexec, stale))
for name in sorted(names):
    link = os.path.join(libexec, name)
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.join(bin_dir, name), link)
PYEOF

# --- 6. activation ------------------------------------------------------------------------------
"$VENV/bin/python" "$ROOT/scripts/write_activate_hook.py" "$VENV/bin/activate" \
  "AMENT_PREFIX_PATH=$VENV" "CMAKE_PREFIX_PATH=$VENV" \
  "LD_LIBRARY_PATH=$VENV/lib${ros_libs:+:$ros_libs}" \
  "_ROS_WHEELS_BOOTSTRAP_COMPLETE=1" "ROS_DISTRO=jazzy" "ROS_VERSION=2" \
  "ROS_PYTHON_VERSION=3" "RMW_IMPLEMENTATION=rmw_fastrtps_cpp"

"$VENV/bin/python" -c "from dmn_localization_interfaces.srv import BuildMap" \
  || die "the interfaces do not import from the venv"
[ -f "$VENV/share/ament_index/resource_index/packages/dmn_localization" ] \
  || die "dmn_localization is missing from the ament index in $VENV/share"
log "done: '. .venv/bin/activate' gives the ROS 2 Jazzy environment"
