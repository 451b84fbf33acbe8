//go:build !linux

package loadgen

import "syscall"

// noPortAtBind does nothing outside Linux (see sockopt_linux.go).
func noPortAtBind(_, _ string, _ syscall.RawConn) error { return nil }
