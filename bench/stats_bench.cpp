// Benchmark: shammie's statistics vs the numpy/scipy reference
// (bench/stats_bench_numpy.py) on the same data, in one run.
//   PPI++ and StratPPI (5 strata): 10^6 autorater predictions, 10^4 labels.
//   LTT: 1,000 configurations x 10^4 calibration losses, HB p-values + FST,
//   on the losses as doubles and as bits (numpy: float64 and bool arrays).
// Usage: stats_bench DATA_DIR   (writes the data there, times, prints JSON)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "analysis/ltt.hpp"
#include "analysis/ppi.hpp"
#include "common/random.hpp"

using namespace shammie;

namespace {
void Dump(const std::string& path, const std::vector<double>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(double)));
}
template <typename F>
double Best(F f, int reps = 5) {
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string dir = argv[1];
  const size_t n = 10000, big_n = 1000000, k_strata = 5, configs = 1000, cal = 10000;
  common::SplitMix64 rng(42);
  std::vector<double> y(n), f(n), fu(big_n), stratum_lab(n), stratum_unl(big_n);
  for (size_t i = 0; i < n + big_n; ++i) {
    const size_t s = i % k_strata;
    const double yv = 0.5 + rng.NextNormal();
    const double fv = yv + 0.1 * static_cast<double>(s) + (0.2 + 0.5 * static_cast<double>(s)) * rng.NextNormal();
    if (i < n) {
      y[i] = yv;
      f[i] = fv;
      stratum_lab[i] = static_cast<double>(s);
    } else {
      fu[i - n] = fv;
      stratum_unl[i - n] = static_cast<double>(s);
    }
  }
  std::vector<double> losses(configs * cal);
  std::vector<std::vector<double>> loss_rows(configs, std::vector<double>(cal));
  for (size_t c = 0; c < configs; ++c) {
    const double risk = 0.15 * static_cast<double>(c) / configs;
    for (size_t i = 0; i < cal; ++i) loss_rows[c][i] = losses[c * cal + i] = rng.NextDouble() < risk ? 1.0 : 0.0;
  }
  Dump(dir + "/y.bin", y);
  Dump(dir + "/f.bin", f);
  Dump(dir + "/fu.bin", fu);
  Dump(dir + "/s_lab.bin", stratum_lab);
  Dump(dir + "/s_unl.bin", stratum_unl);
  Dump(dir + "/losses.bin", losses);

  analysis::MeanEstimate ppi;
  const double t_ppi = Best([&] { ppi = *analysis::PpiMean(y, f, fu, 0.1); });
  // Stratum codes as int32, the flat form's input (a representation choice, outside the timing).
  std::vector<int32_t> code_lab(stratum_lab.begin(), stratum_lab.end()), code_unl(stratum_unl.begin(), stratum_unl.end());
  std::vector<double> weights(k_strata, 0.0);
  for (int32_t c : code_lab) weights[static_cast<size_t>(c)] += 1.0 / static_cast<double>(n + big_n);
  for (int32_t c : code_unl) weights[static_cast<size_t>(c)] += 1.0 / static_cast<double>(n + big_n);
  double total = 0;
  for (double w : weights) total += w;
  for (double& w : weights) w /= total;
  const std::vector<std::string> names = {"0", "1", "2", "3", "4"};
  analysis::StratifiedEstimate strat;
  const double t_strat = Best([&] { strat = *analysis::StratifiedPpiMean(y, f, code_lab, fu, code_unl, weights, names, 0.1); });
  analysis::LttResult ltt;
  const double t_ltt = Best([&] {
    ltt = *analysis::LearnThenTest(loss_rows, 0.1, 0.1, analysis::PValueBound::kHoeffdingBentkus,
                                   analysis::FwerProcedure::kFixedSequence);
  });
  // Binary losses bit-packed (a representation choice, outside the timing,
  // like the stratum codes): the peer gets them as a numpy bool array.
  analysis::BinaryLosses bits;
  for (const auto& row : loss_rows) {
    if (!bits.Add(row).ok()) return 1;
  }
  analysis::LttResult ltt_bits;
  const double t_bits = Best([&] {
    ltt_bits = *analysis::LearnThenTest(bits, 0.1, 0.1, analysis::PValueBound::kHoeffdingBentkus,
                                        analysis::FwerProcedure::kFixedSequence);
  });
  // The memory floor of LTT's input: a plain one-core SIMD sum over the same
  // 80 MB of losses, no checks, no p-values (docs/benchmarks.md).
  typedef double v2 __attribute__((vector_size(16)));
  double floor_sum = 0;
  const double t_floor = Best([&] {
    v2 acc[4] = {};
    for (const auto& row : loss_rows) {
      for (size_t i = 0; i + 8 <= row.size(); i += 8) {
        for (size_t k = 0; k < 4; ++k) {
          v2 v;
          std::memcpy(&v, &row[i + 2 * k], sizeof(v));
          acc[k] += v;
        }
      }
    }
    floor_sum = 0;
    for (const v2& a : acc) floor_sum += a[0] + a[1];
  });
  std::fprintf(stderr, "plain sum of the LTT losses (one core, memory floor): %.2f ms (sum %.0f)\n", t_floor * 1e3,
               floor_sum);
  auto p_sum = [](const analysis::LttResult& r) {
    double s = 0;
    for (double p : r.p_values) s += p;
    return s;
  };
  std::printf("{\"ppi_s\": %.6f, \"strat_s\": %.6f, \"ltt_s\": %.6f, \"ltt_bits_s\": %.6f, "
              "\"ppi\": [%.17g, %.17g, %.17g], \"strat\": [%.17g, %.17g, %.17g], \"ltt_valid\": %zu, "
              "\"ltt_p_sum\": %.17g, \"ltt_bits_valid\": %zu, \"ltt_bits_p_sum\": %.17g}\n",
              t_ppi, t_strat, t_ltt, t_bits, ppi.estimate, ppi.lower, ppi.upper, strat.combined.estimate,
              strat.combined.lower, strat.combined.upper, ltt.valid.size(), p_sum(ltt), ltt_bits.valid.size(),
              p_sum(ltt_bits));
  return 0;
}
