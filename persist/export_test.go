package persist

// SetWriteFault makes every write transaction of db fail at its commit with
// err (rolled back, as bbolt rolls back a commit it could not write), or
// stops that when err is nil: a disk that fills up, for tests.
func SetWriteFault(db *DB, err error) {
	if err == nil {
		db.commits.fault.Store(nil)
		return
	}
	db.commits.fault.Store(&err)
}
