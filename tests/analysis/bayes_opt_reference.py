#!/usr/bin/python3
"""Independent reference for analysis/bayes_opt's Gaussian process. Reads a
JSON list of cases on stdin, writes a JSON list of results on stdout. Used by
tests/analysis/bayes_opt_test.cpp.

For each case (points x, targets y, noise, hyper-parameters, test points):
  - the posterior mean and variance and the log marginal likelihood in closed
    form with numpy (Rasmussen & Williams, Algorithm 2.1) on targets
    standardized as sklearn's normalize_y (population std; std ~ 0 -> 1);
  - sklearn's GaussianProcessRegressor(ConstantKernel * Matern(nu=2.5, ARD
    length scales), alpha=noise, normalize_y=True): its
    log_marginal_likelihood(theta) at the same theta = log(constant, lengths),
    its predictions, and the log marginal likelihood it reaches when fitted
    from constant 1, lengths 1 with n_restarts_optimizer=25 in the same bounds.
"""
import json
import math
import sys
import warnings

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

warnings.filterwarnings("ignore")  # sklearn's convergence warnings would end up in the JSON


def matern52(a, b, lengths):
    diff = (a[:, None, :] - b[None, :, :]) / lengths
    s = math.sqrt(5.0) * np.sqrt((diff**2).sum(axis=-1))
    return (1.0 + s + s**2 / 3.0) * np.exp(-s)


def gp(c):
    x = np.asarray(c["x"], float)
    y = np.asarray(c["y"], float)
    xt = np.asarray(c["x_test"], float)
    noise, const = c["noise"], c["constant"]
    lengths = np.asarray(c["length_scales"], float)

    y_mean = y.mean()
    y_std = y.std()
    if y_std < 10 * np.finfo(float).eps:
        y_std = 1.0
    z = (y - y_mean) / y_std
    k = const * matern52(x, x, lengths) + noise * np.eye(len(x))
    chol = np.linalg.cholesky(k)
    alpha = cho_solve((chol, True), z)
    ks = const * matern52(xt, x, lengths)
    mean = y_mean + y_std * ks @ alpha
    v = solve_triangular(chol, ks.T, lower=True)
    var = (const - (v**2).sum(axis=0)) * y_std**2
    lml = -0.5 * z @ alpha - np.log(np.diag(chol)).sum() - 0.5 * len(x) * math.log(2 * math.pi)

    cb = (c["min_constant"], c["max_constant"])
    lb = (c["min_length_scale"], c["max_length_scale"])
    kernel = ConstantKernel(const, constant_value_bounds=cb) * Matern(length_scale=lengths, length_scale_bounds=lb,
                                                                      nu=2.5)
    fixed = GaussianProcessRegressor(kernel=kernel, alpha=noise, normalize_y=True, optimizer=None).fit(x, y)
    sk_mean, sk_std = fixed.predict(xt, return_std=True)
    start = ConstantKernel(1.0, constant_value_bounds=cb) * Matern(length_scale=np.ones(x.shape[1]),
                                                                   length_scale_bounds=lb, nu=2.5)
    fitted = GaussianProcessRegressor(kernel=start, alpha=noise, normalize_y=True, n_restarts_optimizer=25,
                                      random_state=0).fit(x, y)
    return {
        "mean": mean.tolist(),
        "variance": var.tolist(),
        "lml": float(lml),
        "sklearn_lml": float(fixed.log_marginal_likelihood(kernel.theta)),
        "sklearn_mean": sk_mean.tolist(),
        "sklearn_variance": (sk_std**2).tolist(),
        "sklearn_fitted_lml": float(fitted.log_marginal_likelihood_value_),
        "sklearn_fitted": np.exp(fitted.kernel_.theta).tolist(),
    }


def main():
    cases = json.load(sys.stdin)
    out = []
    for c in cases:
        if c["type"] == "gp":
            out.append(gp(c))
        else:
            raise ValueError("unknown case type " + c["type"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
