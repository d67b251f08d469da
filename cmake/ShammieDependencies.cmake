# Every dependency is required: a missing one is a configure error that names
# the Debian package to install (scripts/setup.sh installs them all).
macro(shammie_require_package pkg debian)
  find_package(${pkg} ${ARGN})
  if(NOT ${pkg}_FOUND)
    message(FATAL_ERROR "shammie needs ${pkg}: apt-get install ${debian} (or run scripts/setup.sh)")
  endif()
endmacro()

shammie_require_package(tomlplusplus libtomlplusplus-dev CONFIG)
shammie_require_package(nlohmann_json nlohmann-json3-dev CONFIG)
shammie_require_package(CLI11 libcli11-dev CONFIG)
shammie_require_package(Boost libboost-math-dev 1.74)
# Bayesian optimization (analysis/bayes_opt.cpp): linear algebra and optimisers.
shammie_require_package(Eigen3 libeigen3-dev 3.4 NO_MODULE)
shammie_require_package(NLopt libnlopt-cxx-dev CONFIG)
# Debian ships two NLopt configs (the C library, and the same built as C++);
# <nlopt.hpp> is a header-only wrapper over the C API, so either library works.
if(TARGET NLopt::nlopt)
  set(SHAMMIE_NLOPT_TARGET NLopt::nlopt)
else()
  set(SHAMMIE_NLOPT_TARGET NLopt::nlopt_cxx)
endif()
shammie_require_package(HDF5 "libhdf5-dev hdf5-tools" COMPONENTS C)
# The `text` task reads gzip-compressed GNU info manuals (workers/tasks.cpp).
shammie_require_package(ZLIB zlib1g-dev)
set(MPI_CXX_SKIP_MPICXX ON)
shammie_require_package(MPI "libopenmpi-dev openmpi-bin" COMPONENTS C)
# Debian's LibTorch (CPU). Its TorchConfig prints a warning about the missing
# kineto library; harmless.
shammie_require_package(Torch "libtorch-dev libopenblas0-openmp" CONFIG)

find_path(XXHASH_INCLUDE_DIR xxhash.h)
find_library(XXHASH_LIBRARY xxhash)
if(NOT XXHASH_INCLUDE_DIR OR NOT XXHASH_LIBRARY)
  message(FATAL_ERROR "shammie needs xxHash: apt-get install libxxhash-dev (or run scripts/setup.sh)")
endif()
add_library(shammie_xxhash UNKNOWN IMPORTED)
set_target_properties(shammie_xxhash PROPERTIES
  IMPORTED_LOCATION ${XXHASH_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${XXHASH_INCLUDE_DIR})

add_library(shammie_hdf5 INTERFACE)
target_include_directories(shammie_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(shammie_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(shammie_hdf5 INTERFACE ${HDF5_C_DEFINITIONS} ${HDF5_DEFINITIONS})

find_program(SHAMMIE_H5DUMP h5dump)
find_program(SHAMMIE_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)

if(SHAMMIE_BUILD_TESTS)
  shammie_require_package(GTest "libgtest-dev libgmock-dev" CONFIG)
endif()

# CUDA + NCCL: the device collectives (cluster/nccl_collectives.*). Optional,
# and never a silent fallback (STYLE.md 23):
#   SHAMMIE_WITH_CUDA=AUTO (default): built when the CUDA toolkit (cudart) and
#     NCCL >= 2.14 are both found, otherwise the stub that answers Unavailable;
#   ON: required, a configure error when either is missing;
#   OFF: the stub, without looking.
# Only cudart and NCCL are linked (host C++ code); nothing is compiled by nvcc.
# Hints: CUDAToolkit_ROOT for the toolkit, NCCL_ROOT (variable or environment)
# for an NCCL outside it (e.g. a pip wheel's nvidia/nccl).
set(SHAMMIE_WITH_CUDA AUTO CACHE STRING "Build the NCCL device collectives: AUTO (when CUDA and NCCL are found), ON (required), OFF")
set_property(CACHE SHAMMIE_WITH_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${SHAMMIE_WITH_CUDA}" shammie_cuda_request)
if(shammie_cuda_request STREQUAL "AUTO")
  set(shammie_cuda_required FALSE)
  set(shammie_cuda_wanted TRUE)
elseif(SHAMMIE_WITH_CUDA)
  set(shammie_cuda_required TRUE)
  set(shammie_cuda_wanted TRUE)
else()
  set(shammie_cuda_required FALSE)
  set(shammie_cuda_wanted FALSE)
endif()

set(SHAMMIE_CUDA_ENABLED OFF)
set(shammie_cuda_missing "")
if(shammie_cuda_wanted)
  find_package(CUDAToolkit QUIET)
  if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cudart)
    set(shammie_cuda_missing "the CUDA toolkit (cudart) was not found: install it under /usr/local/cuda or pass -DCUDAToolkit_ROOT=DIR")
  else()
    find_path(NCCL_INCLUDE_DIR nccl.h
      HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT}
      PATH_SUFFIXES include)
    find_library(NCCL_LIBRARY nccl
      HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}
      PATH_SUFFIXES lib lib64)
    if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY OR NOT EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
      set(shammie_cuda_missing "NCCL was not found (nccl.h: ${NCCL_INCLUDE_DIR}, libnccl: ${NCCL_LIBRARY}): install it next to CUDA or pass -DNCCL_ROOT=DIR")
    else()
      file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" nccl_version_lines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
      set(SHAMMIE_NCCL_VERSION "")
      foreach(part MAJOR MINOR PATCH)
        string(REGEX MATCH "NCCL_${part} +([0-9]+)" _ "${nccl_version_lines}")
        list(APPEND SHAMMIE_NCCL_VERSION "${CMAKE_MATCH_1}")
      endforeach()
      list(JOIN SHAMMIE_NCCL_VERSION "." SHAMMIE_NCCL_VERSION)
      # Non-blocking communicators and ncclCommFinalize (the deadlines) need 2.14.
      if(NOT SHAMMIE_NCCL_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
        set(shammie_cuda_missing "no NCCL version in ${NCCL_INCLUDE_DIR}/nccl.h")
      elseif(SHAMMIE_NCCL_VERSION VERSION_LESS 2.14)
        set(shammie_cuda_missing "NCCL ${SHAMMIE_NCCL_VERSION} at ${NCCL_INCLUDE_DIR} is older than 2.14 (non-blocking communicators)")
      else()
        set(SHAMMIE_CUDA_ENABLED ON)
      endif()
    endif()
  endif()
endif()

if(SHAMMIE_CUDA_ENABLED)
  add_library(shammie_nccl UNKNOWN IMPORTED)
  set_target_properties(shammie_nccl PROPERTIES
    IMPORTED_LOCATION ${NCCL_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
  message(STATUS "shammie: SHAMMIE_WITH_CUDA=${SHAMMIE_WITH_CUDA}: building the NCCL device collectives "
                 "(CUDA ${CUDAToolkit_VERSION} at ${CUDAToolkit_LIBRARY_DIR}, NCCL ${SHAMMIE_NCCL_VERSION} at ${NCCL_LIBRARY})")
elseif(shammie_cuda_required)
  message(FATAL_ERROR "shammie: SHAMMIE_WITH_CUDA=ON but ${shammie_cuda_missing}. "
                      "Use -DSHAMMIE_WITH_CUDA=AUTO or OFF to build without the NCCL device collectives.")
elseif(shammie_cuda_wanted)
  message(STATUS "shammie: SHAMMIE_WITH_CUDA=AUTO: building WITHOUT CUDA: ${shammie_cuda_missing}. "
                 "MakeNcclCollectives() will answer Unavailable.")
else()
  message(STATUS "shammie: SHAMMIE_WITH_CUDA=OFF: building without CUDA; MakeNcclCollectives() will answer Unavailable.")
endif()
