package server

// SimulateEraseCrash makes EraseOrg stop after its rollback, as if the process died there.
func SimulateEraseCrash(on bool) { crashAfterRollback.Store(on) }
