"""`python -m ncstudy` -> ncstudy.cli.main()."""

from ncstudy.cli import main

raise SystemExit(main())
