"""`python -m mirrorsite.config --markdown` prints the settings table; `--write-docs` puts it in
docs/configuration.md; `--check` loads the environment and reports what is wrong with it."""

import argparse
import sys

from mirrorsite.config import reference
from mirrorsite.config.loader import ConfigError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mirrorsite.config", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the settings table (Markdown)")
    action.add_argument("--write-docs", action="store_true", help=f"regenerate the table in {reference.PAGE}")
    action.add_argument("--check", action="store_true", help="read the environment as the mirror would")
    options = parser.parse_args(argv)
    if options.markdown:
        sys.stdout.write(reference.table())
    elif options.write_docs:
        changed = reference.write_page()
        print(f"{reference.PAGE}: {'updated' if changed else 'already up to date'}")
    else:
        try:
            load()
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 1
        print("the environment's settings are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
