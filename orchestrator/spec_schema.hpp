// Declarations of the spec's own tables ([experiment], [[stage]], and the
// stage's resources/retry/sweep tables). One declaration per key drives the
// loader, --explain and docs/experiment-spec.md.
#pragma once

#include "common/schema.hpp"

namespace shammie::orchestrator {

const common::Schema& ExperimentSchema();
const common::Schema& StageSchema();
const common::Schema& ResourcesSchema();
const common::Schema& RetrySchema();
const common::Schema& SweepSchema();
const common::Schema& RandomSweepSchema();
const common::Schema& AnalysisSchema();
const common::Schema& SlurmSchema();
const common::Schema& ContinualSchema();
const common::Schema& ContinualSequenceSchema();

// Largest number of jobs one stage may expand to.
inline constexpr int64_t kMaxJobsPerStage = 1000000;

}  // namespace shammie::orchestrator
