#!/usr/bin/env bash
# Installs what shammie needs to build and test, from Debian packages only.
# Idempotent: installs nothing when everything is present. Needs root (or sudo).
set -euo pipefail

packages=(
  # toolchain and build speed
  cmake ninja-build ccache mold g++ pkg-config git
  # libraries
  libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libxxhash-dev libhdf5-dev libboost-math-dev zlib1g-dev
  # Bayesian optimization: Gaussian processes (Eigen) and their optimisers (NLopt)
  libeigen3-dev libnlopt-cxx-dev
  # MPI: the engine's ranks (mpirun) and gang collectives
  libopenmpi-dev openmpi-bin
  # Slurm: `shammie submit`, and the real one-machine cluster the `slurm` tests bring up
  slurmctld slurmd slurm-client munge
  # LibTorch (CPU) and the BLAS it is fast with
  libtorch-dev libopenblas0-openmp
  # tests: GoogleTest, and the tools results.h5 is checked against
  libgtest-dev libgmock-dev hdf5-tools python3 python3-h5py python3-numpy python3-scipy gnuplot-nox
  # tests: the Gaussian-process oracle (tests/analysis/bayes_opt_reference.py)
  python3-sklearn
  # tests: the safetensors oracle (tests/storage/safetensors_oracle.py)
  python3-torch
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
