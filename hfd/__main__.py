from hfd.daemon.cli import main

raise SystemExit(main())
