"""Every local link of the site resolves: python3 tests/linkcheck.py SITE_DIR."""

import re
import sys
from pathlib import Path


def main(site: Path) -> int:
    broken = 0
    for page in sorted(site.glob("*.html")):
        for link in re.findall(r'href="([^"#:]+)"', page.read_text()):
            ok = (site / link).is_file()
            print(f"{'ok' if ok else 'BROKEN'} {page.name} -> {link}")
            broken += not ok
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
