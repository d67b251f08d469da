// The lm.* job kinds, as the rest of shammie sees them: their config
// schemas, always (validate, plan, --explain work everywhere), and their code,
// which lives in the LibTorch runtime plugin (libshammie_lm.so) and is loaded
// with dlopen on the first lm job a rank runs. Loading LibTorch costs ~0.8 s
// and 300 shared libraries; `shammie validate`, `status`, the controller and
// ranks that never run an lm job do not pay it.
//
// The plugin is looked up in $SHAMMIE_PLUGIN_DIR, then next to the running
// executable. A missing plugin fails the attempt with a message saying so.
#pragma once

#include "workers/job_kind.hpp"

namespace shammie::workers {

void RegisterLmKinds(KindRegistry& registry);

}  // namespace shammie::workers
