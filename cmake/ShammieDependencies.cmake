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
shammie_require_package(HDF5 "libhdf5-dev hdf5-tools" COMPONENTS C)
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
