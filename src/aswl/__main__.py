from aswl.cli import main

raise SystemExit(main())
