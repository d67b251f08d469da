#include "analysis/report.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace shammie::analysis {

namespace {

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else out += c;
  }
  return out + "'";
}

// Runs gnuplot on a script file; Unavailable if gnuplot is missing.
common::Status RunGnuplot(const std::string& script_path) {
  const std::string command = "gnuplot " + Quote(script_path) + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return common::Unavailable("cannot run gnuplot");
  std::string output;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output.append(buf, n);
  const int status = ::pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return common::Unavailable("gnuplot is not installed: apt-get install gnuplot-nox (scripts/setup.sh does)");
    }
    return common::Internal("gnuplot failed on " + script_path + ": " + output);
  }
  return common::Status::Ok();
}


common::Status EnsureDirectory(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return common::Unavailable("cannot create " + dir + ": " + ec.message());
  return common::Status::Ok();
}

common::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) return common::Unavailable("cannot write " + path);
  return common::Status::Ok();
}

// Writes the script as OUT_DIR/<name>.gp (kept next to the plot, so a
// reader can restyle it) and runs gnuplot on it.
common::Status Render(const std::string& out_dir, const std::string& name, const std::string& script) {
  const std::string script_path = (std::filesystem::path(out_dir) / (name + ".gp")).string();
  SHAMMIE_RETURN_IF_ERROR(WriteText(script_path, script));
  return RunGnuplot(script_path);
}

}  // namespace

common::Status PlotMeanAnalysis(const MeanAnalysis& analysis, const std::string& name, const std::string& title,
                                const std::string& out_dir) {
  namespace fs = std::filesystem;
  SHAMMIE_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  const std::string data = (fs::path(out_dir) / (name + ".dat")).string();
  std::ostringstream rows;
  rows.precision(17);
  for (const auto& r : analysis.rows) {
    rows << '"' << r.method << "\" " << r.estimate << ' ' << r.lower << ' ' << r.upper << ' '
         << (r.labels_for_target ? static_cast<double>(*r.labels_for_target) : 0.0) << '\n';
  }
  SHAMMIE_RETURN_IF_ERROR(WriteText(data, rows.str()));
  const std::string png = (fs::path(out_dir) / (name + ".png")).string();
  std::string script = "set terminal png size 900,520\n"
                       "set output " + Quote(png) + "\n"
                       "set title " + Quote(title) + "\n"
                       "set ylabel 'estimate and interval'\n"
                       "set xrange [-0.5:" + std::to_string(analysis.rows.size()) + "-0.5]\n"
                       "set grid ytics\n"
                       "plot " + Quote(data) + " using 0:2:3:4:xtic(1) with yerrorbars pointtype 7 title 'estimate, interval'\n";
  const bool budget = !analysis.rows.empty() && analysis.rows.front().labels_for_target.has_value();
  if (budget) {
    const std::string labels_png = (fs::path(out_dir) / (name + "-labels.png")).string();
    script += "set output " + Quote(labels_png) + "\n"
              "set title " + Quote(title + ": human labels needed for the target width") + "\n"
              "set ylabel 'labels'\n"
              "set yrange [0:*]\n"
              "set style fill solid 0.6\n"
              "set boxwidth 0.6\n"
              "plot " + Quote(data) + " using 0:5:xtic(1) with boxes title 'labels needed'\n";
  }
  return Render(out_dir, name, script);
}

common::Status PlotLtt(const std::vector<std::string>& configs, const std::vector<double>& risks,
                       const std::vector<bool>& valid, double alpha, const std::string& name, const std::string& title,
                       const std::string& out_dir) {
  namespace fs = std::filesystem;
  SHAMMIE_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  const std::string data = (fs::path(out_dir) / (name + ".dat")).string();
  std::string rows;
  for (size_t i = 0; i < configs.size(); ++i) {
    rows += "\"" + configs[i] + "\" " + std::to_string(risks[i]) + " " + (valid[i] ? "1" : "0") + "\n";
  }
  SHAMMIE_RETURN_IF_ERROR(WriteText(data, rows));
  const std::string png = (fs::path(out_dir) / (name + ".png")).string();
  const std::string every = configs.size() > 20 ? std::to_string(configs.size() / 20) : "1";
  const std::string script = "set terminal png size 900,520\n"
                             "set output " + Quote(png) + "\n"
                             "set title " + Quote(title) + "\n"
                             "set ylabel 'empirical risk'\n"
                             "set xlabel 'configuration (testing order)'\n"
                             "set grid ytics\n"
                             "plot " + Quote(data) + " using 0:($3 == 1 ? $2 : 1/0):xtic(int($0) % " + every +
                             " == 0 ? stringcolumn(1) : '') with points pointtype 7 title 'certified', " +
                             Quote(data) + " using 0:($3 == 0 ? $2 : 1/0) with points pointtype 6 title 'not certified', " +
                             std::to_string(alpha) + " with lines dashtype 2 title 'alpha'\n";
  return Render(out_dir, name, script);
}


common::Status PlotHeatmap(const std::vector<std::vector<double>>& values, const std::vector<std::string>& rows,
                           const std::vector<std::string>& columns, const std::string& name, const std::string& title,
                           const std::string& out_dir) {
  namespace fs = std::filesystem;
  SHAMMIE_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  const std::string data = (fs::path(out_dir) / (name + ".dat")).string();
  std::ostringstream text;
  text.precision(6);
  double extent = 1e-9;
  for (size_t r = 0; r < values.size(); ++r) {
    for (size_t c = 0; c < values[r].size(); ++c) {
      // Image cells must form a full grid: a missing value is drawn as 0
      // (white) and left unlabelled.
      const double v = values[r][c];
      char label[32] = "";
      if (std::isfinite(v)) {
        extent = std::max(extent, std::fabs(v));
        std::snprintf(label, sizeof(label), "%.2f", v);
      }
      text << c << ' ' << r << ' ' << (std::isfinite(v) ? v : 0.0) << " \"" << label << "\"\n";
    }
    text << '\n';
  }
  SHAMMIE_RETURN_IF_ERROR(WriteText(data, text.str()));
  auto tics = [](const std::vector<std::string>& labels) {
    std::string out = "(";
    for (size_t i = 0; i < labels.size(); ++i) out += (i ? ", " : "") + Quote(labels[i]) + " " + std::to_string(i);
    return out + ")";
  };
  const std::string png = (fs::path(out_dir) / (name + ".png")).string();
  const std::string script = "set terminal png size 900,760\n"
                             "set output " + Quote(png) + "\n"
                             "set title " + Quote(title) + "\n"
                             "set xtics " + tics(columns) + " rotate by 45 right\n"
                             "set ytics " + tics(rows) + "\n"
                             "set xlabel 'target'\nset ylabel 'source'\n"
                             "set palette defined (-1 'red', 0 'white', 1 'blue')\n"
                             "set cbrange [" + std::to_string(-extent) + ":" + std::to_string(extent) + "]\n"
                             "plot " + Quote(data) + " using 1:2:3 with image notitle, " + Quote(data) +
                             " using 1:2:4 with labels notitle\n";
  return Render(out_dir, name, script);
}

namespace {

// Large x values (parameter counts) plot in thousands or millions, so that
// the tick labels stay short enough not to run together.
struct AxisScale {
  double divisor = 1;
  std::string unit;
};

AxisScale ScaleFor(double max_abs) {
  if (max_abs >= 1e7) return {1e6, "millions"};
  if (max_abs >= 1e4) return {1e3, "thousands"};
  return {};
}

std::string ScaledLabel(const std::string& label, const AxisScale& s) {
  if (s.unit.empty()) return label;
  return label.empty() ? "(" + s.unit + ")" : label + " (" + s.unit + ")";
}

// The gnuplot `using` expression of data column `column` under the scale.
std::string ScaledColumn(int column, const AxisScale& s) {
  if (s.divisor == 1) return std::to_string(column);
  std::ostringstream e;
  e << "($" << column << "/" << s.divisor << ")";
  return e.str();
}

// The lines every curve plot starts with: the picture (taller when the key
// of `entries` names, the longest `longest` characters, goes below it),
// title, axis labels (an empty one is left out), margins and the key.
std::string CurvesPreamble(const std::string& png, const std::string& title, const std::string& x_label,
                           const std::string& y_label, size_t entries, size_t longest) {
  const bool key_below = entries > 6 || longest > 30;
  const size_t height = key_below ? 520 + 18 * ((entries + 1) / 2) : 520;
  return "set terminal png size 900," + std::to_string(height) + "\n"
         "set output " + Quote(png) + "\n"
         "set title " + Quote(title) + "\n"
         "set ylabel " + Quote(y_label) + "\n" +
         (x_label.empty() ? std::string() : "set xlabel " + Quote(x_label) + "\n") +
         "set lmargin 14\n" +
         std::string(key_below ? "set key below maxcols 2\n" : "set key outside right\nset bmargin 9\n") +
         "set termoption noenhanced\n";
}

}  // namespace

common::Status PlotCurves(const std::vector<std::string>& x_labels,
                          const std::vector<std::pair<std::string, std::vector<double>>>& series,
                          const std::string& y_label, const std::string& name, const std::string& title,
                          const std::string& out_dir, const std::string& x_label) {
  namespace fs = std::filesystem;
  SHAMMIE_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  const std::string data = (fs::path(out_dir) / (name + ".dat")).string();
  // Numeric x values (steps, N) go on a numeric axis; others are categories.
  const bool numeric = !x_labels.empty() && std::all_of(x_labels.begin(), x_labels.end(), [](const std::string& l) {
    char* end = nullptr;
    std::strtod(l.c_str(), &end);
    return !l.empty() && end == l.c_str() + l.size();
  });
  // Doublings (N = 1, 2, 4, ..., the last maybe less than doubled) go on a
  // log axis; at least four values, so that 50, 100, 150 stay linear.
  bool geometric = numeric && x_labels.size() >= 4;
  for (size_t i = 0; geometric && i < x_labels.size(); ++i) {
    const double v = std::strtod(x_labels[i].c_str(), nullptr);
    const double prev = i == 0 ? 0 : std::strtod(x_labels[i - 1].c_str(), nullptr);
    geometric = v > 0 && (i == 0 || v >= (i + 1 == x_labels.size() ? 1.0 : 1.9) * prev) && (i == 0 || v > prev);
  }
  double max_x = 0;
  for (size_t i = 0; numeric && i < x_labels.size(); ++i) {
    max_x = std::max(max_x, std::fabs(std::strtod(x_labels[i].c_str(), nullptr)));
  }
  const AxisScale scale = ScaleFor(max_x);
  std::ostringstream text;
  text.precision(6);
  for (size_t i = 0; i < x_labels.size(); ++i) {
    text << i << ' ' << (numeric ? x_labels[i] : "\"" + x_labels[i] + '"');
    for (const auto& s : series) {
      const double v = i < s.second.size() ? s.second[i] : std::nan("");
      text << ' ';
      if (std::isfinite(v)) text << v; else text << "NaN";
    }
    text << '\n';
  }
  SHAMMIE_RETURN_IF_ERROR(WriteText(data, text.str()));
  const std::string png = (fs::path(out_dir) / (name + ".png")).string();
  // Many or long labels go below the plot (beside it they squeeze it); a loss
  // spanning more than a decade (from its first step on) on a log axis.
  size_t longest = 0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& s : series) {
    longest = std::max(longest, s.first.size());
    for (double v : s.second) {
      if (!std::isfinite(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  const bool log_y = lo > 0 && hi > 10 * lo && y_label.find("loss") != std::string::npos;
  std::string script = CurvesPreamble(png, title, ScaledLabel(x_label, scale), y_label, series.size(), longest) +
                       "set datafile missing 'NaN'\nset grid ytics\n" + std::string(log_y ? "set logscale y\n" : "") +
                       std::string(geometric ? "set logscale x 2\n" : "") +
                       std::string(numeric ? "" : "set xtics rotate by 30 right\n") + "plot ";
  for (size_t k = 0; k < series.size(); ++k) {
    script += (k ? ", " : "") + Quote(data) + " using " + (numeric ? ScaledColumn(2, scale) : "1") + ":" +
              std::to_string(k + 3) +
              (k == 0 && !numeric ? ":xtic(2)" : "") + " with linespoints title " + Quote(series[k].first);
  }
  script += "\n";
  return Render(out_dir, name, script);
}

common::Status PlotXYCurves(const std::vector<XYCurve>& curves, const std::string& x_label, const std::string& y_label,
                            const std::string& name, const std::string& title, const std::string& out_dir) {
  namespace fs = std::filesystem;
  SHAMMIE_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  const std::string data = (fs::path(out_dir) / (name + ".dat")).string();
  std::ostringstream text;
  text.precision(8);
  size_t longest = 0;
  double max_x = 0;
  for (const XYCurve& c : curves) {
    for (double x : c.x) {
      if (std::isfinite(x)) max_x = std::max(max_x, std::fabs(x));
    }
  }
  const AxisScale scale = ScaleFor(max_x);
  for (size_t k = 0; k < curves.size(); ++k) {
    if (k) text << "\n\n";  // gnuplot's `index k` block separator
    text << "# " << curves[k].name << '\n';
    for (size_t i = 0; i < curves[k].x.size() && i < curves[k].y.size(); ++i) {
      if (std::isfinite(curves[k].x[i]) && std::isfinite(curves[k].y[i])) text << curves[k].x[i] << ' ' << curves[k].y[i] << '\n';
    }
    longest = std::max(longest, curves[k].name.size());
  }
  SHAMMIE_RETURN_IF_ERROR(WriteText(data, text.str()));
  const std::string png = (fs::path(out_dir) / (name + ".png")).string();
  std::string script =
      CurvesPreamble(png, title, ScaledLabel(x_label, scale), y_label, curves.size(), longest) + "set grid\nplot ";
  for (size_t k = 0; k < curves.size(); ++k) {
    script += (k ? ", " : "") + Quote(data) + " index " + std::to_string(k) + " using " + ScaledColumn(1, scale) +
              ":2 with linespoints title " + Quote(curves[k].name);
  }
  script += "\n";
  return Render(out_dir, name, script);
}

}  // namespace shammie::analysis
