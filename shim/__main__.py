from shim.entry import main

raise SystemExit(main())
