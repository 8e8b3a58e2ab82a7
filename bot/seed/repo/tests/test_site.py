"""The seed site's unit tests; writes a JUnit XML report to the path given (argv[1])."""

import sys
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

SITE = Path(__file__).resolve().parent.parent / "site"


class SiteTests(unittest.TestCase):
    def test_every_page_has_a_title(self) -> None:
        for page in SITE.glob("*.html"):
            self.assertIn("<title>", page.read_text(), page.name)

    def test_the_home_page_links_to_about(self) -> None:
        self.assertIn('href="about.html"', (SITE / "index.html").read_text())


def main(report: Path) -> int:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(SiteTests)
    result = unittest.TestResult()
    cases = list(suite)
    suite.run(result)
    failed = {id(test): text for test, text in result.failures + result.errors}
    root = ET.Element(
        "testsuite",
        name="SiteTests",
        tests=str(len(cases)),
        failures=str(len(result.failures)),
        errors=str(len(result.errors)),
    )
    for case in cases:
        element = ET.SubElement(root, "testcase", classname="SiteTests", name=case._testMethodName)
        if id(case) in failed:
            ET.SubElement(element, "failure", message="failed").text = failed[id(case)]
    report.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(report, encoding="utf-8", xml_declaration=True)
    print(f"{len(cases)} tests, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
