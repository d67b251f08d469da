#include "analysis/pareto.hpp"

namespace shammie::analysis {

using std::size_t;

std::vector<size_t> ParetoFront(const std::vector<std::vector<double>>& points) {
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) {
      if (i == j) continue;
      bool all_le = true, one_lt = false;
      for (size_t d = 0; d < points[i].size(); ++d) {
        if (points[j][d] > points[i][d]) all_le = false;
        if (points[j][d] < points[i][d]) one_lt = true;
      }
      dominated = all_le && one_lt;
    }
    if (!dominated) front.push_back(i);
  }
  return front;
}

}  // namespace shammie::analysis
