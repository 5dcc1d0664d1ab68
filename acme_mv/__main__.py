from __future__ import annotations

from acme_mv.cli import main

if __name__ == "__main__":
    main()
