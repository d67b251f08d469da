// Recursive transformers (PAPERS.md §1, Bae et al. 2024) without LibTorch:
// which shared layer each depth position uses, which original layers
// initialise a shared layer, LoRA parameter counts, and a discrete-event
// simulator of static, continuous sequence-wise and continuous depth-wise
// batching (CDB) under early exits. The model itself lives in the LibTorch
// runtime (workers/lm_model.cpp: ModelConfig::loops, tying, lora_rank).
//
// A recursive model of L layers and B loops has K = L / B physical
// ("shared") layers; position l = 0..L-1 (0-based) runs shared layer
//   CYCLE:    l mod K       (the whole block of K layers looped B times)
//   SEQUENCE: floor(l / B)  (each shared layer repeated B times in a row)
// Conversion from a vanilla L-layer model initialises shared layer k from
//   Stepwise: original layer round(linspace(0, L-1, K))[k], rounding halves
//             to even as Python's round() does (L=18, K=9 gives
//             0,2,4,6,8,11,13,15,17; std::round would give 9 for 8.5);
//   Average:  the mean of the original layers tied to it (the positions l
//             that the tying maps to k);
//   Lower:    original layer k.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

namespace shammie::workers::rec {

enum class Tying { kCycle, kSequence };
enum class Init { kStepwise, kAverage, kLower };

common::Result<Tying> ParseTying(std::string_view name);  // "cycle", "sequence"
common::Result<Init> ParseInit(std::string_view name);    // "stepwise", "average", "lower"
std::string_view TyingName(Tying t);
std::string_view InitName(Init i);

// InvalidArgument unless 1 <= loops <= layers and loops divides layers.
common::Status CheckLoops(int64_t layers, int64_t loops);
// The shared layer (0..K-1) each position 0..layers-1 runs.
std::vector<int64_t> LayerMap(int64_t layers, int64_t loops, Tying tying);
// round(linspace(0, layers - 1, shared)), halves to even.
std::vector<int64_t> StepwiseLayers(int64_t layers, int64_t shared);
// For each shared layer, the original layers whose weights it starts from
// (their mean; one layer for Stepwise and Lower).
std::vector<std::vector<int64_t>> InitSources(int64_t layers, int64_t loops, Tying tying, Init init);

// Parameters a rank-r LoRA (B [d_out, r] A [r, d_in]) adds to one d_in x
// d_out projection at one position: r (d_in + d_out).
int64_t LoraParameters(int64_t rank, int64_t d_in, int64_t d_out);

// --- batching under early exit: a discrete-event simulation ---
//
// A stream of `requests` sequences, each decoding a number of tokens drawn
// uniformly from [min_tokens, max_tokens]. Every token runs through up to
// `loops` stages (one call of the shared block each); after stage j < loops
// it exits with probability `exit_prob` (independently per token and
// stage), so its depth has mean ExpectedDepth(). A "call" runs one stage for
// up to `batch` rows at once, and costs the same however full it is.
// - kStatic: `batch` sequences at a time; the next group starts when the
//   longest of them is done. A decode step costs as many calls as the
//   deepest token of the step (a row that exited waits for the others).
// - kSequence: continuous sequence-wise batching: a finished sequence's row
//   is refilled from the queue at the next decode step; a step still costs
//   its deepest token.
// - kDepth: continuous depth-wise batching: the rows of one call may sit at
//   different stages (the shared block has the same weights at every
//   depth). Every call advances each occupied row by one stage; a row whose
//   token exits moves to its sequence's next token, and a finished
//   sequence's row takes the next request at once.
// With early_exit = false every token runs all `loops` stages.
enum class Batching { kStatic, kSequence, kDepth };
std::string_view BatchingName(Batching b);
common::Result<Batching> ParseBatching(std::string_view name);  // "static", "sequence", "depth"

struct BatchingOptions {
  int64_t requests = 1000;
  int64_t batch = 32;
  int64_t loops = 2;
  double exit_prob = 0.5;
  bool early_exit = true;
  int64_t min_tokens = 16, max_tokens = 64;
  uint64_t seed = 0;
};
common::Status CheckBatchingOptions(const BatchingOptions& o);

struct BatchingResult {
  int64_t calls = 0;          // stage calls
  int64_t tokens = 0;         // tokens decoded (all requests' lengths)
  int64_t stages = 0;         // stages the tokens needed (sum of depths)
  int64_t row_slots = 0;      // rows x calls: what the calls could have held
  double tokens_per_call() const { return calls ? static_cast<double>(tokens) / static_cast<double>(calls) : 0; }
  double stages_per_token() const { return tokens ? static_cast<double>(stages) / static_cast<double>(tokens) : 0; }
  // Share of the calls' rows that did work (CDB keeps it near 1).
  double utilization() const { return row_slots ? static_cast<double>(stages) / static_cast<double>(row_slots) : 0; }
};
// The token depths are drawn from one stream per (seed, request), so every
// policy decodes the same tokens at the same depths.
BatchingResult SimulateBatching(const BatchingOptions& o, Batching policy);
// Mean stages per token: sum_{j=0}^{loops-1} (1 - exit_prob)^j; with exits
// after stage 1 only this is the paper's 1 + (1 - p)(B - 1), and the two
// agree for B = 2 (1.5 at p = 0.5).
double ExpectedDepth(int64_t loops, double exit_prob);

}  // namespace shammie::workers::rec
