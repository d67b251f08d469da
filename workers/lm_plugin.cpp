// Entry points of libshammie_lm.so (see workers/lm_kinds.hpp).
#include "workers/lm.hpp"

// One exported C function per job kind: runs the job and returns its Status
// on the heap; the caller owns nothing else.
#define SHAMMIE_LM_ENTRY(symbol, function)                                                             \
  extern "C" __attribute__((visibility("default"))) shammie::common::Status* symbol(                   \
      shammie::workers::JobContext* ctx) {                                                             \
    return new shammie::common::Status(shammie::workers::function(*ctx));                              \
  }

SHAMMIE_LM_ENTRY(shammie_lm_train, RunLmTrain)
SHAMMIE_LM_ENTRY(shammie_lm_eval, RunLmEval)
SHAMMIE_LM_ENTRY(shammie_lm_sample, RunLmSample)
SHAMMIE_LM_ENTRY(shammie_lm_early_exit, RunLmEarlyExit)
SHAMMIE_LM_ENTRY(shammie_lm_loop_decode, RunLmLoopDecode)
SHAMMIE_LM_ENTRY(shammie_lm_block_decode, RunLmBlockDecode)
SHAMMIE_LM_ENTRY(shammie_pav_didactic, RunPavDidactic)
SHAMMIE_LM_ENTRY(shammie_pav_rollouts, RunPavRollouts)
SHAMMIE_LM_ENTRY(shammie_pav_verifier, RunPavVerifier)
SHAMMIE_LM_ENTRY(shammie_pav_search, RunPavSearch)
SHAMMIE_LM_ENTRY(shammie_pav_rl, RunPavRl)
SHAMMIE_LM_ENTRY(shammie_rm_prefs, RunRmPrefs)
SHAMMIE_LM_ENTRY(shammie_rm_train, RunRmTrain)
SHAMMIE_LM_ENTRY(shammie_rm_score, RunRmScore)
SHAMMIE_LM_ENTRY(shammie_rm_bon, RunRmBestOfN)
SHAMMIE_LM_ENTRY(shammie_rm_rl, RunRmRl)
