// Flat export of a results store for other tools (`shammie export`):
// every metric point as one CSV row, or the runs with their configs and
// metrics as one JSON document.
#pragma once

#include <ostream>

#include "common/status.hpp"
#include "storage/result_store.hpp"

namespace shammie::analysis {

// Header "job_id,stage,kind,seed,metric,step,value", then one row per point,
// runs in job-id order, metrics in name order. Values print with 17
// significant digits (round-trip exact); fields are quoted when needed.
common::Status ExportMetricsCsv(storage::ResultStore& store, std::ostream& out);

// {"experiment", "spec_hash", "shammie_version", "git_commit", "jobs": [...rows of /jobs],
//  "runs": [{"job_id", "stage", "kind", "seed", "inputs", "config": {...},
//            "metrics": {"name": [[step, value], ...]}}]}
common::Status ExportJson(storage::ResultStore& store, std::ostream& out);

}  // namespace shammie::analysis
