package loadgen

import "syscall"

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h).
const ipBindAddressNoPort = 24

// noPortAtBind makes a socket bound to a source address take its port at
// connect time: a bind to port 0 alone reserves a port for every
// destination and draws only from half of the ephemeral range (about
// 10,000 sessions from one source address here), while at connect time
// the port need only be unique per destination (~28,000 per address).
func noPortAtBind(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
