from vlexport.cli import main

raise SystemExit(main())
