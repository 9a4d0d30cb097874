package broker

import "net/http"

// StatsAccess exposes the /stats and /metrics access decision to the
// external tests, for listener addresses a test cannot bind.
func StatsAccess(b *Broker, r *http.Request, addr string) (int, string) {
	return b.statsAccess(r, addr)
}
