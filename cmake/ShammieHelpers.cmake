# shammie_add_library(NAME SRCS a.cpp ... [DEPS ...] [PUBLIC_DEPS ...])
# One library target per folder, alias shammie::NAME. DEPS are PRIVATE unless
# they show in our public headers (PUBLIC_DEPS). Headers are included as
# "folder/file.hpp" from the repository root.
set(SHAMMIE_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual)

function(shammie_target_defaults target)
  target_compile_options(${target} PRIVATE ${SHAMMIE_WARNINGS})
  if(SHAMMIE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

function(shammie_add_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(shammie_${name} STATIC ${ARG_SRCS})
  add_library(shammie::${name} ALIAS shammie_${name})
  target_include_directories(shammie_${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(shammie_${name} PRIVATE ${ARG_DEPS} PUBLIC ${ARG_PUBLIC_DEPS})
  shammie_target_defaults(shammie_${name})
endfunction()

# shammie_add_test(NAME SRCS ... DEPS ... LABELS unit|mpi|slurm|slow|gpu ...)
function(shammie_add_test name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    SHAMMIE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" SHAMMIE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  shammie_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT 300)
endfunction()
