from magicflow.cli import main

raise SystemExit(main())
