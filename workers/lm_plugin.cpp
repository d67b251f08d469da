// Entry points of libshammie_lm.so (see workers/lm_kinds.hpp).
#include "workers/lm.hpp"

extern "C" {

// Returns the job's Status; the caller owns nothing else.
__attribute__((visibility("default"))) shammie::common::Status* shammie_lm_train(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunLmTrain(*ctx));
}
__attribute__((visibility("default"))) shammie::common::Status* shammie_lm_eval(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunLmEval(*ctx));
}
__attribute__((visibility("default"))) shammie::common::Status* shammie_lm_sample(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunLmSample(*ctx));
}
__attribute__((visibility("default"))) shammie::common::Status* shammie_lm_early_exit(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunLmEarlyExit(*ctx));
}

__attribute__((visibility("default"))) shammie::common::Status* shammie_pav_didactic(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunPavDidactic(*ctx));
}

__attribute__((visibility("default"))) shammie::common::Status* shammie_pav_rollouts(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunPavRollouts(*ctx));
}
__attribute__((visibility("default"))) shammie::common::Status* shammie_pav_verifier(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunPavVerifier(*ctx));
}
__attribute__((visibility("default"))) shammie::common::Status* shammie_pav_search(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunPavSearch(*ctx));
}

__attribute__((visibility("default"))) shammie::common::Status* shammie_pav_rl(shammie::workers::JobContext* ctx) {
  return new shammie::common::Status(shammie::workers::RunPavRl(*ctx));
}

}

