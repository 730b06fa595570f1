"""Layer 7, the command line: ``shoplist`` (:mod:`.shoplist`), its ``cluster`` commands
(:mod:`.cluster`) and the demo (:mod:`.demo`). Imports the layers below only."""
