// Entry points of libshammie_lm.so (see workers/lm_kinds.hpp).
#include "workers/lm.hpp"

extern "C" {

// Returns the job's Status; the caller owns nothing else.
__attribute__((visibility("default"))) shammie::common::Status* shammie_lm_train(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunLmTrain(*ctx));
}

}
