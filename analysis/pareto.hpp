// Pareto fronts (all objectives minimized). A point is efficient iff no other
// point is <= in every coordinate and < in at least one; exact duplicates of
// an efficient point are all efficient (implementations differ here:
// PAPERS.md §8(f)).
#pragma once

#include <cstddef>
#include <vector>

namespace shammie::analysis {

// Indices of the efficient points, in input order. O(m^2 d).
std::vector<std::size_t> ParetoFront(const std::vector<std::vector<double>>& points);

}  // namespace shammie::analysis
