package broker_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"

	"github.com/imqtt/imqtt/broker"
)

// Embedding imqtt in another program: start from the defaults, change what
// differs, and serve until Close.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "imqtt-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	cfg := broker.Default()
	cfg.Data = dir
	cfg.Listen = broker.Listen{MQTT: "127.0.0.1:0", WS: "off", HTTP: "127.0.0.1:0"}
	cfg.LogWriter = io.Discard
	b, err := broker.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Start(); err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	res, err := http.Get("http://" + b.Addr("http") + "/healthz")
	if err != nil {
		log.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Printf("MQTT on: %t, WebSocket on: %t\n", b.Addr("mqtt") != "", b.Addr("ws") != "")
	fmt.Print(string(body))
	// Output:
	// MQTT on: true, WebSocket on: false
	// {"status":"ok"}
}
