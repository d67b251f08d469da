#!/usr/bin/env bash
# Fails when a heavy dependency's headers appear outside its room
# (DESIGN.md §2): <torch/...> only in workers/ and experiments/, <mpi.h> only
# in cluster/, HDF5 only in storage/, NCCL/CUDA only in workers/ and in the
# one NCCL backend file cluster/nccl_collectives.cpp. Also fails
# when a header (.hpp/.h) includes <torch/torch.h>: it slows every includer.
# The one exception is the runtime's internal header workers/lm_torch.hpp,
# which only the torch translation units (workers/lm*.cpp) and their tests
# (the sources of lm_test: tests/workers/lm*, rm_kinds_test, pav_kinds_test)
# may include.
# Usage: check_layers.sh [SOURCE_DIR]
set -u
cd "${1:-$(dirname "$0")/..}" || exit 1
status=0
check() {  # regex, allowed-dirs-regex, what
  local hits
  hits=$(grep -rlE --include='*.hpp' --include='*.h' --include='*.cpp' --include='*.cc' --include='*.cu' "$1" \
         common storage cluster workers experiments analysis orchestrator 2>/dev/null | grep -Ev "^($2)(/|$)" || true)
  if [ -n "$hits" ]; then
    echo "layering violation: $3 included outside $2:"; echo "$hits" | sed 's/^/  /'; status=1
  fi
}
check '#include *[<"]torch/' 'workers|experiments' 'LibTorch'
check '#include *[<"]mpi\.h' 'cluster' '<mpi.h>'
check '#include *[<"](hdf5|H5[A-Za-z]*)\.h' 'storage' 'HDF5'
check '#include *[<"](nccl\.h|cuda_runtime|cuda\.h)' 'workers|cluster/nccl_collectives\.cpp' 'NCCL/CUDA'
hdrs=$(grep -rlE '#include *<torch/torch\.h>' --include='*.hpp' --include='*.h' . 2>/dev/null \
       | grep -v '^\./build' | grep -vx '\./workers/lm_torch\.hpp' || true)
if [ -n "$hdrs" ]; then echo "headers that include <torch/torch.h>:"; echo "$hdrs" | sed 's/^/  /'; status=1; fi
hits=$(grep -rlE '#include *"workers/lm_torch\.hpp"' --include='*.hpp' --include='*.h' --include='*.cpp' . 2>/dev/null \
       | grep -v '^\./build' | grep -vE '^\./(workers/lm[a-z_]*\.cpp|tests/workers/(lm|rm_kinds|pav_kinds)[a-z_]*\.cpp)$' || true)
if [ -n "$hits" ]; then echo "workers/lm_torch.hpp is internal to the torch translation units:"; echo "$hits" | sed 's/^/  /'; status=1; fi
# analysis/ and orchestrator/ must not include storage internals.
hits=$(grep -rlE '#include *"storage/h5\.hpp"' common cluster workers experiments analysis orchestrator 2>/dev/null || true)
if [ -n "$hits" ]; then echo "storage/h5.hpp is private to storage/:"; echo "$hits" | sed 's/^/  /'; status=1; fi
[ $status -eq 0 ] && echo "layers ok"
exit $status
