package broker_test

import (
	"testing"

	"github.com/imqtt/imqtt/broker/brokertest"
)

func TestSmokeConnect(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		b := brokertest.Start(t, nil)
		b.Users("alice")
		c := b.Connect(t, "alice", v5)
		code, err := c.Subscribe("im/u/alice/#", 1)
		if err != nil || code != 1 {
			t.Fatalf("v5=%v subscribe: code %d err %v", v5, code, err)
		}
		code, err = c.Subscribe("#", 1)
		if err != nil || code != 0x80 && code != 0x87 {
			t.Fatalf("v5=%v subscribe #: code %x err %v", v5, code, err)
		}
		_, err = b.Dial(brokertest.Opts{V5: v5, User: "alice", Password: "wrong", ClientID: "x"})
		want := byte(4)
		if v5 {
			want = 0x86
		}
		if ce, ok := err.(*brokertest.ConnectError); !ok || ce.Code != want {
			t.Fatalf("v5=%v bad password: %v", v5, err)
		}
	}
}
