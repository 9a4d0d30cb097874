// Command imqtt-bench provisions users for, and drives load against, a
// running imqtt broker, or any MQTT broker in raw mode, and reports
// throughput, loss, duplicates, latency and the broker's CPU and memory.
// See docs/PERFORMANCE.md.
//
//	imqtt-bench provision --provision-store DIR --users N [--star K] [--tokens-out FILE]
//	imqtt-bench provision --admin http://HOST:PORT --admin-user OP --admin-password PW --addr HOST:PORT --users N
//	imqtt-bench pairs|raw|idle|drain|fanout|storm --addr HOST:PORT [flags]
//	imqtt-bench table FILE...
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
