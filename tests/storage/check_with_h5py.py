#!/usr/bin/python3
"""Reads a shammie results.h5 with h5py and compares it to what the C++ API
read back (a JSON file). Exit 0 when identical; prints the first difference
otherwise. Usage: check_with_h5py.py results.h5 expected.json"""
import json
import math
import sys

import h5py
import numpy as np


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def fail(msg):
    print("h5py disagrees:", msg)
    sys.exit(1)


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    with h5py.File(path, "r") as f:
        for key, want in expected["attributes"].items():
            got = f.attrs[key]
            got = int(got) if isinstance(want, int) else text(got)
            if got != want:
                fail(f"root attribute {key}: {got!r} != {want!r}")
        jobs = f["jobs"][:]
        if len(jobs) != len(expected["jobs"]):
            fail(f"{len(jobs)} job rows, expected {len(expected['jobs'])}")
        for row, want in zip(jobs, expected["jobs"]):
            for field, value in want.items():
                got = row[field]
                if isinstance(value, str):
                    got = text(got)
                elif isinstance(value, float):
                    got = float(got)
                else:
                    got = int(got)
                if got != value:
                    fail(f"job {want['id']} field {field}: {got!r} != {value!r}")
        runs = sorted(f["runs"].keys())
        if runs != sorted(expected["runs"].keys()):
            fail(f"runs {runs} != {sorted(expected['runs'].keys())}")
        for job_id, want in expected["runs"].items():
            g = f["runs"][job_id]
            for attr in ("stage", "kind", "config"):
                if text(g.attrs[attr]) != want[attr]:
                    fail(f"run {job_id} attribute {attr}")
            if int(g.attrs["seed"]) != want["seed"]:
                fail(f"run {job_id} seed")
            if json.loads(text(g.attrs["inputs"])) != want["inputs"]:
                fail(f"run {job_id} inputs")
            for name, points in want["metrics"].items():
                data = g["metrics"][name][:]
                if data.dtype.names != ("step", "value"):
                    fail(f"metric {name} fields {data.dtype.names}")
                if len(data) != len(points):
                    fail(f"metric {name}: {len(data)} points, expected {len(points)}")
                for (step, value), row in zip(points, data):
                    if int(row["step"]) != step or not same_float(float(row["value"]), value):
                        fail(f"metric {name} point {step}: {row} != {(step, value)}")
            for name, columns in want["tables"].items():
                data = g["tables"][name][:]
                if list(data.dtype.names) != [c["name"] for c in columns]:
                    fail(f"table {name} columns {data.dtype.names}")
                for c in columns:
                    got = data[c["name"]]
                    if c["type"] == "string":
                        values = [text(v) for v in got]
                    elif c["type"] == "float":
                        if got.dtype != np.float64:
                            fail(f"table {name} column {c['name']} dtype {got.dtype}")
                        values = [float(v) for v in got]
                    else:
                        if got.dtype != np.int64:
                            fail(f"table {name} column {c['name']} dtype {got.dtype}")
                        values = [int(v) for v in got]
                    if values != c["values"]:
                        fail(f"table {name} column {c['name']}: {values[:5]} != {c['values'][:5]}")
    print("h5py reads the same store as C++")


if __name__ == "__main__":
    main()
