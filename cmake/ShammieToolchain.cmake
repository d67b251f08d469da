# Compile-time helpers: ccache, mold, sanitizers. Ninja is chosen by the
# scripts (-G Ninja) since the generator cannot be picked from inside CMake.
find_program(SHAMMIE_CCACHE ccache)
if(SHAMMIE_CCACHE)
  set(CMAKE_C_COMPILER_LAUNCHER ${SHAMMIE_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${SHAMMIE_CCACHE})
endif()

if(SHAMMIE_USE_MOLD)
  find_program(SHAMMIE_MOLD mold)
  if(SHAMMIE_MOLD)
    add_link_options(-fuse-ld=mold)
  endif()
endif()

if(SHAMMIE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
