// Reports of analyses: PNG plots drawn by gnuplot (Debian's gnuplot-nox) and
// a JSON summary, under a report directory.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "analysis/mean_analysis.hpp"
#include "common/status.hpp"

namespace shammie::analysis {

// Writes OUT_DIR/<name>.png: each method's estimate with its interval; and,
// when labels_for_target is set, OUT_DIR/<name>-labels.png: the labels each
// method needs for the target width. Runs `gnuplot`; Unavailable if it is
// not installed.
common::Status PlotMeanAnalysis(const MeanAnalysis& analysis, const std::string& name, const std::string& title,
                                const std::string& out_dir);

// Writes OUT_DIR/<name>.png: empirical risk per configuration (in testing
// order), the level alpha, and which configurations were certified.
common::Status PlotLtt(const std::vector<std::string>& configs, const std::vector<double>& risks,
                       const std::vector<bool>& valid, double alpha, const std::string& name, const std::string& title,
                       const std::string& out_dir);

// Writes OUT_DIR/<name>.png: a heatmap of values[row][column] (NaN cells
// white and unlabelled), diverging around 0, each cell labelled with its value.
common::Status PlotHeatmap(const std::vector<std::vector<double>>& values, const std::vector<std::string>& rows,
                           const std::vector<std::string>& columns, const std::string& name, const std::string& title,
                           const std::string& out_dir);

// Writes OUT_DIR/<name>.png: one line per series over the labelled x positions.
// Curves whose points each have their own x (e.g. reward against KL, one
// curve per group): <name>.dat (one block per curve) and <name>.png.
struct XYCurve {
  std::string name;
  std::vector<double> x, y;
};
common::Status PlotXYCurves(const std::vector<XYCurve>& curves, const std::string& x_label, const std::string& y_label,
                            const std::string& name, const std::string& title, const std::string& out_dir);

common::Status PlotCurves(const std::vector<std::string>& x_labels,
                          const std::vector<std::pair<std::string, std::vector<double>>>& series,
                          const std::string& y_label, const std::string& name, const std::string& title,
                          const std::string& out_dir, const std::string& x_label = "");

}  // namespace shammie::analysis
