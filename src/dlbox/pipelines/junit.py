"""A test stage's JUnit XML, read as hostile: bounded, no entities (defusedxml), counts checked."""

from __future__ import annotations

MAX_BYTES = 8 * 1024 * 1024
MAX_FAILURES_SHOWN = 20


def parse(data: bytes) -> dict:
    """{"tests", "failures", "errors", "skipped", "failed": [names]} from <testsuites> or <testsuite>;
    a usage-style ValueError with one line for anything else."""
    import defusedxml.ElementTree as ET
    from defusedxml import DefusedXmlException

    if len(data) > MAX_BYTES:
        raise ValueError(f"junit.xml is over {MAX_BYTES // 1024 // 1024} MiB; not read")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise ValueError(f"junit.xml is not valid JUnit XML ({type(exc).__name__}: {str(exc)[:120]})") from None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite")) if root.tag == "testsuites" else None
    if suites is None:
        raise ValueError(f"junit.xml: the root is <{str(root.tag)[:40]}>, not <testsuites> or <testsuite>")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    for suite in suites:
        for case in suite.iter("testcase"):
            counts["tests"] += 1
            outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), None)
            if outcome == "failure":
                counts["failures"] += 1
            elif outcome == "error":
                counts["errors"] += 1
            elif outcome == "skipped":
                counts["skipped"] += 1
            if outcome in ("failure", "error") and len(failed) < MAX_FAILURES_SHOWN:
                name = f"{case.get('classname') or ''}::{case.get('name') or '?'}".strip(":")
                failed.append("".join(c for c in name if c.isprintable())[:200])
    return {**counts, "failed": failed}


def summary(result: dict) -> str:
    passed = result["tests"] - result["failures"] - result["errors"] - result["skipped"]
    text = f"{result['tests']} tests: {passed} passed, {result['failures']} failed, {result['errors']} errors"
    return text + (f", {result['skipped']} skipped" if result["skipped"] else "")
