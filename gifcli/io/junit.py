"""JUnit XML for CI systems: one test case per threshold of ``gif evaluate``.

A CI system that reads JUnit files (GitHub Actions test reporters, GitLab's ``artifacts:reports:
junit``, Jenkins) then shows each gate as a passed or failed test, with the measured value in
its message.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .files import atomic_path

GATES = (
    ("min_test_acc", "test accuracy", lambda r: r["test"]["accuracy"], ">=", 100.0),
    ("max_forget_acc", "forget accuracy", lambda r: (r.get("forget") or {}).get("accuracy"), "<=", 100.0),
    ("max_gap", "Avg. Gap to the retrained model", lambda r: (r.get("retrained") or {}).get("avg_gap"), "<=", 100.0),
)


def junit_document(report: dict) -> ET.ElementTree:
    thresholds = report.get("thresholds") or {}
    suite = ET.Element("testsuite", name="gif evaluate", tests="0", failures="0")
    tests = failures = 0
    for key, what, value_of, op, factor in GATES:
        limit = thresholds.get(key)
        if limit is None:
            continue
        value = value_of(report)
        measured = None if value is None else factor * value
        ok = measured is not None and (measured >= limit if op == ">=" else measured <= limit)
        case = ET.SubElement(suite, "testcase", classname="gif.gates", name=f"{key} {op} {limit:g}")
        text = f"{what} {measured:.4g} (limit {op} {limit:g}) for {report.get('model')}" if measured is not None \
            else f"{what} not measured"
        if ok:
            ET.SubElement(case, "system-out").text = text
        else:
            ET.SubElement(case, "failure", message=text, type="threshold").text = text
            failures += 1
        tests += 1
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    return ET.ElementTree(suite)


def write_junit(path: str | Path, report: dict) -> None:
    doc = junit_document(report)
    with atomic_path(path) as tmp:
        doc.write(tmp, encoding="utf-8", xml_declaration=True)
