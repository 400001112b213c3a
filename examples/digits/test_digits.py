"""The digits example's checks, run by the pipeline's test stage in the image; results as JUnit XML in
$DLBOX_RUN_DIR/artifacts/junit.xml (the image has no pytest; `python -m pytest --junitxml=...` would do
the same where it has)."""

import os
import sys
import traceback
import unittest
from xml.sax.saxutils import quoteattr


class Data(unittest.TestCase):
    def test_digits_are_8x8_in_ten_classes(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.assertEqual(digits.data.shape[1], 64)
        self.assertEqual(sorted(set(digits.target)), list(range(10)))

    def test_the_split_is_stratified_and_fixed(self):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        first = train_test_split(digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
        again = train_test_split(digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
        self.assertTrue((first[3] == again[3]).all())


if __name__ == "__main__":
    def flat(tests):
        for test in tests:
            yield from (flat(test) if isinstance(test, unittest.TestSuite) else [test])

    result = unittest.TestResult()
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    tests = list(flat(suite))  # a suite lets go of its tests as it runs them
    suite.run(result)
    bad = {id(t): ("failure", e) for t, e in result.failures} | {id(t): ("error", e) for t, e in result.errors}
    cases = []
    for test in tests:
        kind, text = bad.get(id(test), (None, None))
        inner = f"<{kind} message={quoteattr(text.splitlines()[-1])}/>" if kind else ""
        cases.append(f"<testcase classname={quoteattr(type(test).__name__)} name={quoteattr(test._testMethodName)}>"
                     f"{inner}</testcase>")
    out = os.path.join(os.environ.get("DLBOX_RUN_DIR", "."), "artifacts")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "junit.xml"), "w") as handle:
        handle.write(f"<testsuites><testsuite name='digits'>{''.join(cases)}</testsuite></testsuites>")
    print(f"{result.testsRun} tests, {len(result.failures)} failures, {len(result.errors)} errors")
    sys.exit(0 if result.wasSuccessful() else 1)
