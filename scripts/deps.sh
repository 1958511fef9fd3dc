#!/usr/bin/env bash
# Builds the C++ dependencies of impact-elastix once per machine, into a cache outside the clone:
#   ITK 5.4.7 and elastix 5.3.1 from Debian's source packages, static + PIC + Release, with ccache.
# Re-running is cheap: each stage leaves a stamp and is skipped when its stamp exists.
# Prints the SDK prefix (ITK_DIR/ElastixDir live below it) as its last line.
#
#   deps.sh --reference   also builds elastix 5.3.1 WITH its own Impact component (USE_ImpactMetric,
#                         LibTorch from $PYTHON's torch) against the same ITK, into
#                         $CACHE/reference/...: the competitor for benchmarks/ only, never linked
#                         into our product. Prints that prefix.
#
# Environment:
#   IMPACT_DEPS_CACHE  cache root (default ~/.cache/impact-elastix)
#   IMPACT_JOBS        parallel build jobs (default: number of cores)
set -euo pipefail

ITK_VERSION=5.4.7
ELASTIX_VERSION=5.3.1
ITK_DEB=insighttoolkit5
ELASTIX_DEB=elastix
ITK_DEB_REV=${ITK_VERSION}-1
ELASTIX_DEB_REV=${ELASTIX_VERSION}-1

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${IMPACT_DEPS_CACHE:-$HOME/.cache/impact-elastix}
JOBS=${IMPACT_JOBS:-$(nproc)}
SRC=$CACHE/src
mkdir -p "$SRC" "$CACHE/ccache"

log() { printf '[deps %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- tools --------------------------------------------------------------------------------------
need_pkgs=()
command -v ccache >/dev/null || need_pkgs+=(ccache)
command -v ninja >/dev/null || need_pkgs+=(ninja-build)
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing build tools: ${need_pkgs[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
    || die "could not install ${need_pkgs[*]} with apt-get"
fi
export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}

# One build at a time per cache (CMake's configure step may call this script while a user runs it).
if [ "${1:-}" != "--sdk-path" ] && [ -z "${IMPACT_DEPS_LOCKED:-}" ]; then
  exec 9>"$CACHE/.lock"
  flock -n 9 || { log "another deps.sh is building in $CACHE; waiting for it"; flock 9; }
  export IMPACT_DEPS_LOCKED=1
fi
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}

# --- sources from Debian ------------------------------------------------------------------------
# A private apt configuration: a deb-src line for 'unstable' on the same mirror the machine already
# uses, so nothing under /etc is changed and no host name is written into this repository.
fetch_sources() {
  local apt=$CACHE/apt
  mkdir -p "$apt/lists/partial"
  local uri
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list(.d); cannot fetch sources"
  echo "deb-src $uri unstable main" > "$apt/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$apt/lists" -o "APT::Sandbox::User=root")
  log "updating the source index (unstable)"
  apt-get "${APT_OPTS[@]}" update -qq || die "apt-get update of the deb-src index failed"
}

# pick_version PKG WANTED PREFIX: WANTED if the index has it, else the newest PREFIX.x revision.
pick_version() {
  local pkg=$1 want=$2 prefix=$3 have
  have=$(apt-cache "${APT_OPTS[@]}" showsrc "$pkg" 2>/dev/null | awk '/^Version:/{print $2}')
  if grep -qx "$want" <<<"$have"; then echo "$want"; return; fi
  local alt
  alt=$(grep "^$prefix\." <<<"$have" | sort -V | tail -1)
  [ -n "$alt" ] || die "$pkg: neither $want nor any $prefix.x is in Debian unstable (have: $(echo $have))"
  log "WARNING: $pkg $want is gone from unstable; falling back to $alt"
  echo "$alt"
}

# verify_dsc DSC: every file named in the .dsc's Checksums-Sha256 must be present and match.
verify_dsc() {
  local dsc=$1 dir n=0
  dir=$(dirname "$dsc")
  while read -r sum size name; do
    [ -f "$dir/$name" ] || die "$name listed in $(basename "$dsc") is missing"
    echo "$sum  $dir/$name" | sha256sum -c --quiet - || die "checksum mismatch for $name (expected $sum)"
    n=$((n + 1))
  done < <(awk '/^Checksums-Sha256:/{f=1; next} /^[^ ]/{f=0} f && NF==3 {print}' "$dsc")
  [ "$n" -gt 0 ] || die "no Checksums-Sha256 in $dsc"
  log "verified $n file(s) against $(basename "$dsc")"
}

# get_source PKG VERSION: downloads into $SRC/PKG-VERSION, verifies, unpacks the orig tarball.
get_source() {
  local pkg=$1 ver=$2 dir=$SRC/$1-$2
  if [ -f "$dir/.unpacked" ]; then echo "$dir"; return; fi
  mkdir -p "$dir"
  [ -n "${APT_OPTS+x}" ] || fetch_sources
  log "downloading Debian source $pkg=$ver"
  (cd "$dir" && apt-get "${APT_OPTS[@]}" source --download-only -qq "$pkg=$ver" >&2) \
    || die "download of $pkg=$ver failed"
  local dsc
  dsc=$(ls "$dir"/*.dsc | head -1)
  verify_dsc "$dsc"
  local orig
  orig=$(ls "$dir"/*.orig.tar.* | head -1)
  log "unpacking $(basename "$orig")"
  rm -rf "$dir/tree" && mkdir -p "$dir/tree"
  tar xf "$orig" -C "$dir/tree" --strip-components=1 || die "could not unpack $orig"
  touch "$dir/.unpacked"
  echo "$dir"
}


# --- ITK ----------------------------------------------------------------------------------------
# The modules elastix 5.3.1 asks for in find_package(ITK ...), with the IO factories we ship:
# MetaImage, NIfTI, NRRD, DICOM, the 2D formats, and HDF5 transforms (SlicerElastix reads .h5).
ITK_MODULES=(ITKCommon ITKDisplacementField ITKDistanceMap ITKGDCM ITKImageCompose ITKImageFunction
  ITKImageGradient ITKImageGrid ITKImageIntensity ITKImageStatistics ITKMathematicalMorphology ITKMesh
  ITKOptimizers ITKRegistrationCommon ITKSmoothing ITKSpatialObjects ITKStatistics ITKTestKernel
  ITKThresholding ITKTransform ITKTransformFactory ITKIOImageBase ITKIOMeshBase ITKIOMeshOBJ ITKIOMeta
  ITKIOTransformBase ITKIOXML ITKIONIFTI ITKIONRRD ITKIOGDCM ITKIOPNG ITKIOJPEG ITKIOTIFF ITKIOBMP
  ITKIOVTK ITKIOGIPL ITKIOMeshVTK ITKIOTransformHDF5 ITKIOTransformInsightLegacy ITKIOTransformMatlab)
COMMON_FLAGS=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_TESTING=OFF
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
ITK_FLAGS=("${COMMON_FLAGS[@]}" -DBUILD_EXAMPLES=OFF -DITK_BUILD_DEFAULT_MODULES=OFF
  -DITK_WRAP_PYTHON=OFF -DITK_SKIP_PATH_LENGTH_CHECKS=ON)
for m in "${ITK_MODULES[@]}"; do ITK_FLAGS+=("-DModule_$m=ON"); done

# --- elastix ------------------------------------------------------------------------------------
# Components users reach for; everything else is switched off to keep the build short.
# Upstream's own Impact component stays off: ours is Components/ in this repository.
ELASTIX_COMPONENTS=(MultiResolutionRegistration MultiMetricMultiResolutionRegistration
  FixedGenericPyramid MovingGenericPyramid FixedSmoothingPyramid MovingSmoothingPyramid
  FixedRecursivePyramid MovingRecursivePyramid
  RandomCoordinateSampler RandomSampler RandomSamplerSparseMask FullSampler GridSampler
  BSplineInterpolator BSplineInterpolatorFloat LinearInterpolator NearestNeighborInterpolator
  BSplineResampleInterpolator BSplineResampleInterpolatorFloat LinearResampleInterpolator
  NearestNeighborResampleInterpolator
  TranslationTransformElastix EulerTransformElastix SimilarityTransformElastix
  AdvancedAffineTransformElastix AdvancedBSplineTransform RecursiveBSplineTransform
  AdaptiveStochasticGradientDescent StandardGradientDescent QuasiNewtonLBFGS
  RegularStepGradientDescent PreconditionedStochasticGradientDescent
  AdvancedMattesMutualInformationMetric AdvancedNormalizedCorrelationMetric AdvancedMeanSquaresMetric
  NormalizedMutualInformationMetric TransformBendingEnergyPenalty CorrespondingPointsEuclideanDistanceMetric
  DefaultResampler)

# The executables export elastix's logging functions so that a plugin built from this very cache
# writes into the host's elastix.log (a plugin loaded by any other elastix keeps its own copy).
# $ORIGIN/../lib is where dlopen("libImpactMetric.so") looks, beside the executables.
ELASTIX_EXTRA_FLAGS=(-DELASTIX_USE_OPENCL=OFF -DUSE_ALL_COMPONENTS=OFF
  "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--dynamic-list=$CACHE/elastix-exports.list"
  "-DCMAKE_INSTALL_RPATH=\$ORIGIN/../lib")
elastix_flags() {
  local src=$1
  ELASTIX_FLAGS=("${COMMON_FLAGS[@]}" "${ELASTIX_EXTRA_FLAGS[@]}")
  local name
  for name in $(grep -rhoiE '^[ \t]*ADD_ELXCOMPONENT\([ \t]*[A-Za-z0-9_]+' "$src/Components" \
                | sed -E 's/.*\([ \t]*//' | sort -u); do
    if printf '%s\n' "${ELASTIX_COMPONENTS[@]}" | grep -qx "$name"; then
      ELASTIX_FLAGS+=("-DUSE_$name=ON")
    else
      ELASTIX_FLAGS+=("-DUSE_$name=OFF")
    fi
  done
}

# cmake_build NAME SRC PREFIX FLAGS...: configure, build and install with progress on stderr.
cmake_build() {
  local name=$1 src=$2 prefix=$3; shift 3
  local bld=$CACHE/build/$(basename "$prefix")-$name
  mkdir -p "$bld"
  log "configuring $name (build dir $bld)"
  cmake -S "$src" -B "$bld" -DCMAKE_INSTALL_PREFIX="$prefix" "$@" > "$bld/configure.log" 2>&1 \
    || { tail -30 "$bld/configure.log" >&2; die "configuring $name failed (log: $bld/configure.log)"; }
  log "building $name with $JOBS job(s); ninja progress follows"
  local t0=$SECONDS
  # Ninja prints [done/total]; keep one line in 50 so CI logs show progress without flooding.
  set -o pipefail
  cmake --build "$bld" --parallel "$JOBS" 2>&1 | tee "$bld/build.log" \
    | awk '/^\[[0-9]+\/[0-9]+\]/ { n++; if (n % 50 == 1) { print; fflush() } next } /error|Error|FAILED/ { print; fflush() }' >&2 \
    || { tail -40 "$bld/build.log" >&2; die "building $name failed (log: $bld/build.log)"; }
  cmake --install "$bld" > "$bld/install.log" 2>&1 || die "installing $name failed"
  log "$name built in $(( SECONDS - t0 )) s"
}

# The index is only consulted (network) when the wanted revisions are not unpacked yet.
if [ ! -f "$SRC/$ITK_DEB-$ITK_DEB_REV/.unpacked" ] || [ ! -f "$SRC/$ELASTIX_DEB-$ELASTIX_DEB_REV/.unpacked" ]; then
  fetch_sources
  ITK_DEB_REV=$(pick_version $ITK_DEB "$ITK_DEB_REV" 5.4)
  ELASTIX_DEB_REV=$(pick_version $ELASTIX_DEB "$ELASTIX_DEB_REV" 5.3)
fi
[ "${1:-}" = "--fetch-only" ] && { get_source $ITK_DEB "$ITK_DEB_REV"; get_source $ELASTIX_DEB "$ELASTIX_DEB_REV"; exit 0; }

ITK_SRC=$(get_source $ITK_DEB "$ITK_DEB_REV")/tree
ELASTIX_SRC=$(get_source $ELASTIX_DEB "$ELASTIX_DEB_REV")/tree
elastix_flags "$ELASTIX_SRC"

# Our executables load the "Impact" component from libImpactMetric.so on demand, as a stock elastix
# 5.3.1 does; its component database first logs "Error: ... This component is not installed!"
# for it, which is not an error here (the loader reports a plugin that fails to load). The patch
# drops that one line for "Impact" only; it is applied to the unpacked source, and the build
# reruns incrementally (one file and the links) whenever the patch text changes.
PATCH_FILE=Core/Install/elxComponentDatabase.cxx
PATCH_MARK='// impact-elastix: "Impact" is loaded on demand'
if ! grep -qF "$PATCH_MARK" "$ELASTIX_SRC/$PATCH_FILE"; then
  python3 - "$ELASTIX_SRC/$PATCH_FILE" "$PATCH_MARK" <<'PY' || die "patching $PATCH_FILE failed"
import sys
path, mark = sys.argv[1:]
text = open(path).read()
old = '  if (found == end(CreatorMap))\n  {\n    log::error('
new = '  if (found == end(CreatorMap))\n  {\n    if (name != "Impact") ' + mark + '\n    log::error('
if text.count(old) != 1:
    sys.exit(f"{path}: the expected GetCreator code was not found")
open(path, "w").write(text.replace(old, new))
PY
fi

# The SDK prefix is keyed by versions, compiler and every flag (not by where this clone lives), so a
# change of any makes a new one and every clone shares it. The export list only relinks (below).
# The key covers what decides the build: versions, compiler and this script's settings (module and
# component lists, flags with the cache path abstracted); not where this clone lives.
key_text() {
  echo "$ITK_DEB_REV $ELASTIX_DEB_REV $(c++ --version | head -1)"
  printf '%s\n' "${ITK_FLAGS[@]}" "${COMMON_FLAGS[@]}" "${ELASTIX_COMPONENTS[@]}" "${ELASTIX_EXTRA_FLAGS[@]}" \
    | sed "s|$CACHE|CACHE|g"
}
KEY=$(key_text | sha256sum | cut -c1-12)
[ "${1:-}" = "--key-text" ] && { key_text; exit 0; }
SDK=$CACHE/sdk/itk-${ITK_DEB_REV%-*}_elastix-${ELASTIX_DEB_REV%-*}_$KEY
[ "${1:-}" = "--sdk-path" ] && { echo "$SDK"; exit 0; }
if [ ! -f "$SDK/.itk-done" ]; then
  cmake_build itk "$ITK_SRC" "$SDK" "${ITK_FLAGS[@]}"
  touch "$SDK/.itk-done"
fi
if [ ! -f "$SDK/.elastix-done" ]; then
  cp "$HERE/elastix-exports.list" "$CACHE/elastix-exports.list"
  ITK_DIR=$(dirname "$(find "$SDK/lib/cmake" -name ITKConfig.cmake | head -1)")
  cmake_build elastix "$ELASTIX_SRC" "$SDK" "${ELASTIX_FLAGS[@]}" -DITK_DIR="$ITK_DIR"
  # Our plugin compiles against elastix's source headers; the tests use its Testing/Data.
  echo "$ELASTIX_SRC" > "$SDK/elastix-source-dir"
  echo "$CACHE/build/$(basename "$SDK")-elastix" > "$SDK/elastix-build-dir"
  touch "$SDK/.elastix-done" "$SDK/.exports-$(sha256sum < "$HERE/elastix-exports.list" | cut -c1-12)" \
    "$SDK/.patched-$(sha256sum < "$ELASTIX_SRC/$PATCH_FILE" | cut -c1-12)"
fi
PATCHED=$(sha256sum < "$ELASTIX_SRC/$PATCH_FILE" | cut -c1-12)
if [ -f "$SDK/.elastix-done" ] && [ ! -f "$SDK/.patched-$PATCHED" ]; then
  bld=$(cat "$SDK/elastix-build-dir" 2>/dev/null || echo "$CACHE/build/$(basename "$SDK")-elastix")
  log "rebuilding elastix with the on-demand Impact patch (incremental)"
  cmake --build "$bld" --parallel "$JOBS" > "$bld/patch.log" 2>&1 \
    && cmake --install "$bld" > "$bld/install.log" 2>&1 || die "rebuilding elastix failed (log: $bld/patch.log)"
  rm -f "$SDK"/.patched-*
  touch "$SDK/.patched-$PATCHED"
fi
# Relink the executables when the export list changed (ninja does not track the list's content).
EXPORTS=$(sha256sum < "$HERE/elastix-exports.list" | cut -c1-12)
if [ ! -f "$SDK/.exports-$EXPORTS" ]; then
  cp "$HERE/elastix-exports.list" "$CACHE/elastix-exports.list"
  bld=$(cat "$SDK/elastix-build-dir" 2>/dev/null || echo "$CACHE/build/$(basename "$SDK")-elastix")
  rm -f "$bld/bin/elastix" "$bld/bin/transformix" "$SDK"/.exports-*
  if [ -f "$SDK/.elastix-done" ]; then
    log "relinking elastix and transformix with the export list"
    cmake --build "$bld" --target elastix_exe transformix_exe > "$bld/relink.log" 2>&1 \
      && cmake --install "$bld" > "$bld/install.log" 2>&1 || die "relinking failed (log: $bld/relink.log)"
  fi
  touch "$SDK/.exports-$EXPORTS"
fi
nm -D --defined-only "$SDK/bin/elastix" | grep -q _ZN7elastix3log4info \
  || die "$SDK/bin/elastix does not export elastix::log (plugin messages would be lost)"
ln -sfn "$SDK" "$CACHE/sdk/current"
if [ "${1:-}" = "--reference" ]; then
  # The SDK is ready: let other builds of it proceed while the (long) reference builds under its own lock.
  flock -u 9 2>/dev/null || true
  exec 8>"$CACHE/.lock-reference"
  flock -n 8 || { log "another deps.sh is building the reference; waiting for it"; flock 8; }
  PY=${PYTHON:-python3}
  TORCH_PREFIX=$("$PY" -c "import torch.utils; print(torch.utils.cmake_prefix_path)") \
    || die "--reference needs torch in $PY (set PYTHON)"
  TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__)")
  # The competitor as its authors ship it: same source, ITK and components, plus USE_ImpactMetric.
  REF_FLAGS=("${COMMON_FLAGS[@]}" -DELASTIX_USE_OPENCL=OFF -DUSE_ALL_COMPONENTS=OFF)
  for f in "${ELASTIX_FLAGS[@]}"; do
    case $f in -DUSE_ImpactMetric=*) ;; -DUSE_*) REF_FLAGS+=("$f") ;; esac
  done
  REF_FLAGS+=(-DUSE_ImpactMetric=ON "-DTorch_DIR=$TORCH_PREFIX/Torch" "-DCMAKE_INSTALL_RPATH=\$ORIGIN/../lib")
  REF_KEY=$( (echo "$KEY $TORCH_VERSION"; printf '%s\n' "${REF_FLAGS[@]}" | grep -v Torch_DIR) | sha256sum | cut -c1-12)
  REF=$CACHE/reference/elastix-${ELASTIX_DEB_REV%-*}-impact_$REF_KEY
  if [ ! -f "$REF/.done" ]; then
    ITK_DIR=$(dirname "$(find "$SDK/lib/cmake" -name ITKConfig.cmake | head -1)")
    cmake_build elastix-reference "$ELASTIX_SRC" "$REF" "${REF_FLAGS[@]}" -DITK_DIR="$ITK_DIR"
    echo "$TORCH_PREFIX" > "$REF/torch-prefix"
    touch "$REF/.done"
  fi
  echo "$REF"
  exit 0
fi
ccache -s 2>/dev/null | grep -iE "hits|cache size" | sed 's/^/[deps] ccache: /' >&2 || true
echo "$SDK"
